/* kernel.c — ring 0 of the ferry test guest: everything between the PVH entry and the drop
 * to ring 3. Reads hvm_start_info (command line, memmap), parses the command line (with the
 * virtio_mmio.device= entries, virtio_mmio.c), builds the page tables (identity map of RAM +
 * the LAPIC and IOAPIC pages + the virtio-mmio windows in device modes; the working-set
 * window at 64 GiB), sets up IDT and per-CPU TSS (I/O bitmap opening COM1 and port 0xf4 to
 * ring 3), finds the TSC frequency, starts the APs with INIT-SIPI-SIPI and enters the ring-3
 * workload (the BSP with IF=1 in device modes, for the virtio interrupts it counts).
 * Afterwards ring 0 only runs for exceptions, the ring-3 service calls (power off, park,
 * route a virtio IRQ) and the interrupt stubs of entry.S.
 *
 * On this host ring-0 code is emulated at ~0.7 us per instruction, so every loop here is
 * short and proportional to what is mapped, never to a fixed maximum. The loader zeroes
 * bss (as ELF requires), so only non-zero page-table entries are written.
 */
#include "guest.h"
#include "virtio_mmio.h"

#define XEN_HVM_START_MAGIC 0x336ec578
#define LAPIC_BASE 0xfee00000ULL
#define IOAPIC_BASE 0xfec00000ULL
#define DMA_MAX (64ULL << 20) /* device modes: RAM for the drivers' rings and buffers */
#define LAPIC_SVR 0xf0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define LAPIC_LVT0 0x350
#define LAPIC_LVT1 0x360
#define PTE_P 0x1ULL
#define PTE_W 0x2ULL
#define PTE_U 0x4ULL
#define PTE_PWT 0x8ULL
#define PTE_PCD 0x10ULL
#define PTE_PS 0x80ULL
#define PTE_TABLE (PTE_P | PTE_W | PTE_U)
#define PTE_2M (PTE_P | PTE_W | PTE_U | PTE_PS)
#define MAX_MEMMAP 64
#define IDENT_GIBS 64

struct hvm_start_info {
    u32 magic, version, flags, nr_modules;
    u64 modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
    u32 memmap_entries, reserved;
};
struct hvm_memmap_entry {
    u64 addr, size;
    u32 type, reserved;
};

struct tss {
    u32 rsv0;
    u64 rsp0, rsp1, rsp2, rsv1;
    u64 ist[7];
    u64 rsv2;
    u16 rsv3, iomap_base;
    u8 iomap[129]; /* ports 0..0x3ff, then the 0xff terminator */
} __attribute__((packed));
struct tss_slot {
    struct tss t;
} __attribute__((aligned(256)));

struct idt_gate {
    u64 lo, hi;
};

/* Page tables; entry.S fills pml4[0], pdpt[0] and pd_ident[0]. */
u64 pml4[512] __attribute__((aligned(4096)));
u64 pdpt[512] __attribute__((aligned(4096)));
u64 pd_ident[IDENT_GIBS][512] __attribute__((aligned(4096)));
static u64 pd_win[WIN_MAX >> 30][512] __attribute__((aligned(4096)));

u8 kstacks[MAX_CPUS][KSTACK_SIZE] __attribute__((aligned(4096)));
static u8 ustacks[MAX_CPUS][USTACK_SIZE] __attribute__((aligned(4096)));
static struct tss_slot tss[MAX_CPUS];
static struct idt_gate idt[256];
u32 boot_start_info; /* %ebx at entry, stored by entry.S */

static char cmdline[1024];
static u64 rsdp_pa; /* hvm_start_info.rsdp_paddr: ferry's ACPI tables (0: --no-acpi) */
static struct hvm_memmap_entry memmap[MAX_MEMMAP];
static u32 memmap_n;
static u64 ident_mapped; /* bit g: GiB g is identity-mapped */

extern u64 exc_stubs[32], irq_stubs[VIRTIO_MMIO_MAX];
extern char svc_poweroff[], svc_park[], svc_irq_route[], irq_spurious[], tramp_start[], tramp_end[], boot_stack_top[], __image_end[];
extern u64 gdt_tss[];
extern struct {
    u16 limit;
    u64 base;
} __attribute__((packed)) gdt_ptr;
void enter_user(void (*rip)(u64), u64 rsp, u64 arg, u64 rflags) __attribute__((noreturn));
void kmain(void) __attribute__((noreturn));
void ap_kmain(u64 cpu) __attribute__((noreturn));
u64 exc_handler(u64 *frame);

_Static_assert(__builtin_offsetof(struct shared, irqs) == SHARED_IRQS, "entry.S counts interrupts at g+SHARED_IRQS");

static void say(const char *a, const char *b) {
    struct line l;
    line_init(&l);
    line_str(&l, a);
    if (b) line_str(&l, b);
    line_emit(&l, 1000);
}

static __attribute__((noreturn)) void poweroff(u32 code) {
    outl(0xf4, code);
    for (;;) __asm__ volatile("cli; hlt");
}

static void lapic_write(u32 reg, u32 v) { *(volatile u32 *)(LAPIC_BASE + reg) = v; }

static void cpuid(u32 leaf, u32 *a, u32 *b, u32 *c, u32 *d) {
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}

static void delay_us(u64 us) {
    u64 end = rdtsc() + us * g.tsc_khz / 1000;
    while ((s64)(rdtsc() - end) < 0) cpu_relax();
}

/* frame: saved rdi, vector, error code, rip, cs, rflags, rsp, ss. Returns (to entry.S, which
 * returns to the caller with the result in %rax) only for the VEC_IRQ_ROUTE service call. */
u64 exc_handler(u64 *f) {
    if (f[1] == VEC_IRQ_ROUTE) return vmmio_route(f[0]);
    /* This host's KVM raises #UD for "int N" in ring 3: treat our own service calls. */
    if (f[1] == 6 && (f[4] & 3) == 3 && ((const u8 *)f[3])[0] == 0xcd) {
        u8 v = ((const u8 *)f[3])[1];
        if (v == VEC_POWEROFF) poweroff((u32)f[0]);
        if (v == VEC_PARK)
            for (;;) __asm__ volatile("cli; hlt");
        if (v == VEC_IRQ_ROUTE) {
            f[3] += 2; /* past the int instruction */
            return vmmio_route(f[0]);
        }
    }
    u64 cr2;
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    struct line l;
    line_init(&l);
    line_str(&l, "guest: FAULT vec=");
    line_u64(&l, f[1]);
    line_str(&l, " rip=");
    line_hex(&l, f[3]);
    line_str(&l, " cr2=");
    line_hex(&l, cr2);
    line_str(&l, " err=");
    line_hex(&l, f[2]);
    line_emit(&l, 100000);
    poweroff(3);
}

static void set_gate(u32 v, u64 fn, u32 dpl) {
    idt[v].lo = (fn & 0xffff) | ((u64)SEL_KCODE << 16) | ((u64)(0x8e | dpl << 5) << 40) | ((fn >> 16) & 0xffff) << 48;
    idt[v].hi = fn >> 32;
}

static void load_idt(void) {
    struct {
        u16 limit;
        u64 base;
    } __attribute__((packed)) p = {sizeof idt - 1, (u64)idt};
    __asm__ volatile("lidt %0" : : "m"(p));
}

/* Per-CPU TSS (RSP0 for exceptions from ring 3, I/O bitmap), its descriptor, TR and IDTR. */
static void cpu_setup(u32 cpu, u64 rsp0) {
    struct tss *t = &tss[cpu].t;
    t->rsp0 = rsp0;
    t->iomap_base = __builtin_offsetof(struct tss, iomap);
    u64 *m = (u64 *)t->iomap;
    for (u32 i = 0; i < 16; i++) m[i] = ~0ULL;
    t->iomap[0xf4 / 8] = 0x0f;  /* ports 0xf4-0xf7 open (a 32-bit out to 0xf4 checks all four) */
    t->iomap[0x3f8 / 8] = 0x00; /* ports 0x3f8-0x3ff open */
    t->iomap[128] = 0xff;
    u64 base = (u64)t, limit = sizeof(struct tss) - 1;
    gdt_tss[2 * cpu] = (limit & 0xffff) | (base & 0xffffff) << 16 | 0x89ULL << 40 | ((limit >> 16) & 0xf) << 48 |
                       ((base >> 24) & 0xff) << 56;
    gdt_tss[2 * cpu + 1] = base >> 32;
    __asm__ volatile("ltr %w0" : : "r"(SEL_TSS0 + 16 * cpu));
    load_idt();
}

static void map_gib(u64 gib) {
    if (gib >= IDENT_GIBS || (ident_mapped >> gib & 1)) return;
    u64 *pd = pd_ident[gib];
    u64 e = gib << 30 | PTE_2M;
    for (u32 i = 0; i < 512; i++, e += MiB2) pd[i] = e;
    pdpt[gib] = (u64)pd | PTE_TABLE;
    ident_mapped |= 1ULL << gib;
}

void map_range(u64 pa, u64 len) {
    if (!len) return;
    for (u64 gib = pa >> 30; gib <= (pa + len - 1) >> 30; gib++) map_gib(gib);
}

static u64 cmos(u8 reg) {
    outb(0x70, reg);
    return inb(0x71);
}

static void add_ram(u64 addr, u64 size) {
    if (memmap_n < MAX_MEMMAP) memmap[memmap_n++] = (struct hvm_memmap_entry){addr, size, 1, 0};
}

/* Copies the command line and the RAM entries of the memmap into the image. */
static void read_start_info(void) {
    const struct hvm_start_info *si = (const struct hvm_start_info *)(u64)boot_start_info;
    map_range((u64)si, sizeof *si);
    if (si->magic != XEN_HVM_START_MAGIC) {
        say("guest: error bad hvm_start_info magic", NULL);
        poweroff(2);
    }
    if (si->cmdline_paddr) {
        map_range(si->cmdline_paddr, sizeof cmdline);
        const char *s = (const char *)si->cmdline_paddr;
        for (u32 i = 0; i < sizeof cmdline - 1 && s[i]; i++) cmdline[i] = s[i];
    }
    rsdp_pa = si->rsdp_paddr;
    if (si->version >= 1 && si->memmap_paddr && si->memmap_entries) {
        const struct hvm_memmap_entry *mm = (const struct hvm_memmap_entry *)si->memmap_paddr;
        map_range(si->memmap_paddr, si->memmap_entries * sizeof *mm);
        for (u32 i = 0; i < si->memmap_entries && i < 1024; i++)
            if (mm[i].type == 1 && mm[i].size) add_ram(mm[i].addr, mm[i].size);
    }
    if (!memmap_n) {
        /* No memmap: CMOS sizes if there is a CMOS, else a conservative 64 MiB. */
        u64 above16 = (cmos(0x34) | cmos(0x35) << 8) << 16, above1 = (cmos(0x30) | cmos(0x31) << 8) << 10;
        u64 above4g = (cmos(0x5b) | cmos(0x5c) << 8 | cmos(0x5d) << 16) << 16;
        u64 low_end = 64ULL << 20;
        if (above16 && above16 != 0xffffULL << 16) low_end = (16ULL << 20) + above16;
        else if (above1 && above1 != 0xffffULL << 10) low_end = (1ULL << 20) + above1;
        say("guest: warning no memmap, sizing RAM from CMOS", NULL);
        add_ram(0, 0x9fc00);
        add_ram(1ULL << 20, low_end - (1ULL << 20));
        if (above4g && above4g != 0xffffffULL << 16) add_ram(4ULL << 30, above4g);
    }
    for (u32 i = 1; i < memmap_n; i++) /* insertion sort by address */
        for (u32 j = i; j && memmap[j].addr < memmap[j - 1].addr; j--) {
            struct hvm_memmap_entry t = memmap[j];
            memmap[j] = memmap[j - 1];
            memmap[j - 1] = t;
        }
}

static __attribute__((noreturn)) void bad(const char *key) {
    say("guest: error bad ", key);
    poweroff(2);
}

static void parse_cmdline(struct config *c) {
    c->mode = MODE_IDLE;
    c->wss = 64ULL << 20;
    c->seed = 1;
    c->blk_bs = 4096;
    c->blk_qd = 1;
    const char *p = cmdline;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == '\n') p++;
        const char *k = p, *eq = NULL;
        while (*p && *p != ' ' && *p != '\t' && *p != '\n') {
            if (*p == '=' && !eq) eq = p;
            p++;
        }
        if (!eq) continue;
        u32 kn = (u32)(eq - k), vn = (u32)(p - eq - 1);
        const char *v = eq + 1;
        u64 x;
        if (str_eq(k, kn, "mode")) {
            if (str_eq(v, vn, "idle")) c->mode = MODE_IDLE;
            else if (str_eq(v, vn, "dirty")) c->mode = MODE_DIRTY;
            else if (str_eq(v, vn, "verify")) c->mode = MODE_VERIFY;
            else if (str_eq(v, vn, "tlb")) c->mode = MODE_TLB;
            else if (str_eq(v, vn, "ksm")) c->mode = MODE_KSM;
            else if (str_eq(v, vn, "blk")) c->mode = MODE_BLK;
            else if (str_eq(v, vn, "net")) c->mode = MODE_NET;
            else bad("mode");
        } else if (str_eq(k, kn, "wss")) {
            if (!parse_size(v, vn, &x) || x == 0) bad("wss");
            c->wss = x;
        } else if (str_eq(k, kn, "rate")) {
            if (str_eq(v, vn, "max")) c->rate_max = 1, c->rate = 0;
            else if (parse_size(v, vn, &x)) c->rate = x, c->rate_max = 0;
            else bad("rate");
        } else if (str_eq(k, kn, "seed")) {
            if (!parse_u64(v, vn, &x)) bad("seed");
            c->seed = x;
        } else if (str_eq(k, kn, "tsc_khz")) {
            if (!parse_u64(v, vn, &x) || x == 0 || x > 100000000) bad("tsc_khz");
            c->tsc_khz = x;
        } else if (str_eq(k, kn, "cpus")) {
            if (!parse_u64(v, vn, &x) || x == 0 || x > MAX_CPUS) bad("cpus");
            c->cpus = (u32)x;
        } else if (str_eq(k, kn, "ticks")) {
            if (!parse_u64(v, vn, &x)) bad("ticks");
            c->ticks = x;
        } else if (str_eq(k, kn, "inject_corrupt")) {
            if (!parse_u64(v, vn, &x)) bad("inject_corrupt");
            c->inject = x;
        } else if (str_eq(k, kn, "virtio_mmio.device")) {
            if (!vmmio_parse(v, vn)) bad("virtio_mmio.device");
        } else if (str_eq(k, kn, "irq")) {
            if (str_eq(v, vn, "on")) c->irq_off = 0;
            else if (str_eq(v, vn, "off")) c->irq_off = 1;
            else bad("irq");
        } else if (str_eq(k, kn, "blkop")) {
            if (str_eq(v, vn, "verify")) c->blkop = BLKOP_VERIFY;
            else if (str_eq(v, vn, "read")) c->blkop = BLKOP_READ;
            else if (str_eq(v, vn, "write")) c->blkop = BLKOP_WRITE;
            else if (str_eq(v, vn, "randread")) c->blkop = BLKOP_RANDREAD;
            else if (str_eq(v, vn, "randwrite")) c->blkop = BLKOP_RANDWRITE;
            else bad("blkop");
        } else if (str_eq(k, kn, "bs")) {
            if (!parse_size(v, vn, &x) || x < 512 || x > (1ULL << 20) || x % 512) bad("bs");
            c->blk_bs = x;
        } else if (str_eq(k, kn, "qd")) {
            if (!parse_u64(v, vn, &x) || x == 0 || x > 32) bad("qd");
            c->blk_qd = (u32)x;
        }
    }
}

int map_mmio_2m(u64 pa, int user) {
    u64 page = pa & ~(MiB2 - 1);
    if (user && (page == (LAPIC_BASE & ~(MiB2 - 1)) || page == (IOAPIC_BASE & ~(MiB2 - 1)))) return 0;
    pdpt[pa >> 30] = (u64)pd_ident[pa >> 30] | PTE_TABLE; /* pa < 4 GiB (vmmio_parse) */
    pd_ident[pa >> 30][(pa >> 21) & 511] = page | PTE_P | PTE_W | PTE_PS | PTE_PCD | PTE_PWT | (user ? PTE_U : 0);
    return 1;
}

/* Identity map: every GiB holding RAM (below 64 GiB), plus the LAPIC page, uncached; in
 * device modes also the IOAPIC page (ring 0 only) and the virtio-mmio windows (ring 3). */
static void map_memory(void) {
    ident_mapped |= 1; /* GiB 0, by entry.S */
    for (u32 i = 0; i < memmap_n; i++)
        if (memmap[i].addr < (u64)IDENT_GIBS << 30) map_range(memmap[i].addr, memmap[i].size);
    map_mmio_2m(LAPIC_BASE, 0);
    if (device_mode(&g.cfg)) {
        map_mmio_2m(IOAPIC_BASE, 0);
        if (!vmmio_map()) bad("virtio_mmio.device (in the APIC pages)");
    }
}

/* Device modes: the RAM above the image (up to DMA_MAX, contiguous) for the drivers' rings
 * and buffers (dma_alloc). Empty if there is none: the drivers then fail clearly. */
static void place_dma(void) {
    u64 floor = ((u64)__image_end + MiB2 - 1) & ~(MiB2 - 1);
    for (u32 i = 0; i < memmap_n; i++) {
        u64 end = memmap[i].addr + memmap[i].size;
        if (memmap[i].addr <= floor && floor < end && end <= (u64)IDENT_GIBS << 30) {
            g.dma.base = floor;
            g.dma.len = end - floor < DMA_MAX ? end - floor : DMA_MAX;
        }
    }
}

/* Working set, then the generation array, in 2 MiB chunks of RAM above the image, mapped
 * contiguously at WIN_VIRT. */
static void place_working_set(void) {
    u64 np = (g.cfg.wss + PAGE_SIZE - 1) / PAGE_SIZE;
    u64 ws_bytes = (np * PAGE_SIZE + MiB2 - 1) & ~(MiB2 - 1);
    u64 need = ws_bytes + ((np * 4 + MiB2 - 1) & ~(MiB2 - 1));
    u64 floor = ((u64)__image_end + MiB2 - 1) & ~(MiB2 - 1), off = 0;
    if (g.cfg.wss > WIN_MAX) need = ~0ULL;
    for (u32 i = 0; i < memmap_n && off < need && need <= WIN_MAX; i++) {
        u64 lo = (memmap[i].addr + MiB2 - 1) & ~(MiB2 - 1), hi = (memmap[i].addr + memmap[i].size) & ~(MiB2 - 1);
        if (lo < floor) lo = floor;
        for (; lo < hi && off < need; lo += MiB2, off += MiB2) {
            u64 *pd = pd_win[off >> 30];
            if (!(off & ((1ULL << 30) - 1))) pdpt[(WIN_VIRT + off) >> 30] = (u64)pd | PTE_TABLE;
            pd[(off >> 21) & 511] = lo | PTE_2M;
            if (g.nruns && g.runs[g.nruns - 1].gpa + g.runs[g.nruns - 1].len == lo) g.runs[g.nruns - 1].len += MiB2;
            else if (g.nruns < MAX_RUNS) g.runs[g.nruns++] = (struct run){off, lo, MiB2};
            else off = need = ~0ULL; /* cannot describe it: too fragmented */
        }
    }
    if (off < need || need > WIN_MAX) {
        say("guest: error wss too large", NULL);
        poweroff(2);
    }
    g.npages = np;
    g.ws = (u8 *)WIN_VIRT;
    g.gen = (u32 *)(WIN_VIRT + ws_bytes);
}

/* PIT channel 0 (its IRQ is masked) counting down at 1.193182 MHz from 0xffff; ~50 ms.
 * Port 0x61 (channel 2's output) is not used: QEMU microvm has no speaker port. */
static u32 pit_count(void) {
    outb(0x43, 0x00); /* latch channel 0 */
    u32 lo = inb(0x40);
    return lo | (u32)inb(0x40) << 8;
}

static u64 pit_calibrate(void) {
    const u32 ticks = 59659; /* 50 ms */
    outb(0x43, 0x30);        /* channel 0, lo/hi, mode 0, binary */
    outb(0x40, 0xff);
    outb(0x40, 0xff);
    u32 c0 = pit_count();
    u64 t0 = rdtsc();
    for (u32 i = 0; i < 200000; i++) {
        u32 c = pit_count();
        if (c <= c0 && c0 - c >= ticks) return (rdtsc() - t0) * 1193182 / ((u64)(c0 - c) * 1000);
    }
    return 0;
}

static u64 tsc_detect(void) {
    u32 a, b, c, d, max;
    if (g.cfg.tsc_khz) return g.cfg.tsc_khz;
    cpuid(0x40000000, &a, &b, &c, &d); /* hypervisor leaves: 0x40000010 EAX = TSC kHz */
    if (a >= 0x40000010 && a < 0x40000100) {
        cpuid(0x40000010, &a, &b, &c, &d);
        if (a) return a;
    }
    cpuid(0, &max, &b, &c, &d);
    if (max >= 0x15) {
        cpuid(0x15, &a, &b, &c, &d);
        if (a && b && c) return (u64)c * b / a / 1000;
    }
    if (max >= 0x16) {
        cpuid(0x16, &a, &b, &c, &d);
        if (a & 0xffff) return (u64)(a & 0xffff) * 1000;
    }
    u64 khz = pit_calibrate();
    if (!khz) {
        say("guest: warning TSC calibration failed, assuming 2 GHz", NULL);
        khz = 2000000;
    }
    return khz;
}

static void start_aps(void) {
    memcpy((void *)TRAMPOLINE_PA, tramp_start, (usize)(tramp_end - tramp_start));
    lapic_write(LAPIC_ICR_HI, 0);
    lapic_write(LAPIC_ICR_LO, 0xc4500); /* INIT, assert, all excluding self */
    delay_us(10000);
    for (int i = 0; i < 2; i++) {
        lapic_write(LAPIC_ICR_HI, 0);
        lapic_write(LAPIC_ICR_LO, 0xc4600 | (TRAMPOLINE_PA >> 12)); /* SIPI */
        delay_us(200);
    }
}

void kmain(void) {
    serial_init();
    outb(0x21, 0xff); /* mask both 8259s */
    outb(0xa1, 0xff);
    for (u32 v = 0; v < 32; v++) set_gate(v, exc_stubs[v], 0);
    set_gate(VEC_POWEROFF, (u64)svc_poweroff, 3);
    set_gate(VEC_PARK, (u64)svc_park, 3);
    set_gate(VEC_IRQ_ROUTE, (u64)svc_irq_route, 3);
    for (u32 i = 0; i < VIRTIO_MMIO_MAX; i++) set_gate(VEC_VIRTIO0 + i, irq_stubs[i], 0);
    set_gate(VEC_SPURIOUS, (u64)irq_spurious, 0);
    load_idt();

    read_start_info();
    parse_cmdline(&g.cfg);
    if (device_mode(&g.cfg) && !g.nvmmio) vmmio_from_acpi(rsdp_pa);
    map_memory();
    if (g.cfg.mode != MODE_IDLE && !device_mode(&g.cfg)) place_working_set(); /* blk: wss = disk bytes */
    if (device_mode(&g.cfg)) place_dma();
    __asm__ volatile("mov %%cr3, %%rax; mov %%rax, %%cr3" ::: "rax", "memory");

    lapic_write(LAPIC_LVT0, 0x10000); /* masked (KVM resets the BSP's LVT0 to ExtINT) */
    lapic_write(LAPIC_LVT1, 0x10000);
    lapic_write(LAPIC_SVR, 0x1ff); /* software-enable, spurious vector 0xff */

    g.tsc_khz = tsc_detect();
    struct line l;
    line_init(&l);
    line_str(&l, "guest: tsc_khz=");
    line_u64(&l, g.tsc_khz);
    line_emit(&l, 1000);

    cpu_setup(0, (u64)boot_stack_top);
    if (g.cfg.cpus != 1) start_aps();
    /* Device modes: IF=1 on the BSP, whose drivers get their IRQs routed (virtio_irq_enable). */
    const u64 rflags = device_mode(&g.cfg) && !g.cfg.irq_off ? 0x202 : 0x2;
    enter_user(bsp_user_main, (u64)ustacks[0] + USTACK_SIZE - 8, 0, rflags);
}

void ap_kmain(u64 cpu) {
    cpu_setup((u32)cpu, (u64)kstacks[cpu] + KSTACK_SIZE);
    enter_user(ap_user_main, (u64)ustacks[cpu] + USTACK_SIZE - 8, cpu, 0x2);
}
