/* virtio_mmio.c — the test guest's virtio-mmio transport (see virtio_mmio.h): ring 0 parses
 * the virtio_mmio.device= entries, maps their windows and routes their IOAPIC pins; ring 3
 * finds devices, does the init handshake and runs split virtqueues for the drivers.
 * Ring-0 code here is emulated on this host (~0.7 us per instruction): it stays short.
 */
#include "virtio_mmio.h"

#define IOAPIC_PA 0xfec00000ULL
#define IOAPIC2_PA 0xfec10000ULL
#define LAPIC_ID_PA 0xfee00020ULL
#define MiB2_MASK (MiB2 - 1)

/* ---- ring 0 ---- */

/* A memparse-like number: decimal or 0x hex, then an optional K/M/G suffix. */
static int parse_mem(const char *s, u32 n, u64 *out) {
    u32 shift = 0;
    if (n > 1 && !(n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))) {
        char c = s[n - 1];
        shift = c == 'k' || c == 'K' ? 10 : c == 'm' || c == 'M' ? 20 : c == 'g' || c == 'G' ? 30 : 0;
        if (shift) n--;
    }
    u64 v;
    if (!parse_u64(s, n, &v) || (shift && v > (~0ULL >> shift))) return 0;
    *out = v << shift;
    return 1;
}

int vmmio_parse(const char *v, u32 n) {
    u32 at = 0, c1 = 0, c2 = n;
    while (at < n && v[at] != '@') at++;
    for (c1 = at; c1 < n && v[c1] != ':'; c1++) {}
    for (c2 = c1 + 1; c2 < n && v[c2] != ':'; c2++) {}
    if (c2 > n) c2 = n;
    u64 size, base, irq;
    if (at >= n || c1 >= n || !parse_mem(v, at, &size) || !parse_mem(v + at + 1, c1 - at - 1, &base) ||
        !parse_u64(v + c1 + 1, c2 - c1 - 1, &irq))
        return 0;
    return vmmio_add(base, size, irq);
}

int vmmio_add(u64 base, u64 size, u64 irq) {
    if (size == 0 || size > (4ULL << 30) || base > (4ULL << 30) - size ||
        (base & ~MiB2_MASK) != ((base + size - 1) & ~MiB2_MASK) || irq > 47)
        return 0;
    if (g.nvmmio < VIRTIO_MMIO_MAX) g.vmmio[g.nvmmio++] = (struct vmmio_entry){base, size, (u32)irq};
    return 1;
}

int vmmio_map(void) {
    for (u32 i = 0; i < g.nvmmio; i++)
        if (!map_mmio_2m(g.vmmio[i].base, 1)) return 0;
    return 1;
}

static void ioapic_write(u64 base, u32 reg, u32 v) {
    *(volatile u32 *)base = reg;
    *(volatile u32 *)(base + 0x10) = v;
}

u64 vmmio_route(u64 entry) {
    if (entry >= g.nvmmio) return 1;
    u32 pin = g.vmmio[entry].irq;
    u64 io = IOAPIC_PA;
    if (pin >= 24) io = IOAPIC2_PA, pin -= 24;
    *(volatile u32 *)io = 1; /* IOAPICVER: bits 16-23 = last redirection entry */
    if (pin > ((*(volatile u32 *)(io + 0x10) >> 16) & 0xff)) return 2;
    u32 apic_id = *(volatile u32 *)LAPIC_ID_PA >> 24;
    ioapic_write(io, 0x11 + 2 * pin, apic_id << 24);
    ioapic_write(io, 0x10 + 2 * pin, VEC_VIRTIO0 + (u32)entry); /* fixed, physical, high, edge, unmasked */
    return 0;
}

/* ---- ring 3 ---- */

void virtio_fail(const char *driver, const char *what) {
    struct line l;
    line_init(&l);
    line_str(&l, "guest: error ");
    line_str(&l, driver);
    line_str(&l, " ");
    line_str(&l, what);
    line_emit(&l, 0);
    __asm__ volatile("int %0" : : "i"(VEC_POWEROFF), "D"(2) : "memory");
    for (;;) cpu_relax();
}

void *dma_alloc(u64 bytes, u64 align) {
    u64 off = (g.dma.used + align - 1) & ~(align - 1);
    if (off > g.dma.len || bytes > g.dma.len - off) return NULL;
    g.dma.used = off + bytes;
    return (void *)(g.dma.base + off);
}

static int transport_has(u32 i, u32 device_id, struct virtio_dev *d) {
    *d = (struct virtio_dev){i, g.vmmio[i].irq, g.vmmio[i].base, 0};
    return g.vmmio[i].size >= VIRTIO_MMIO_CONFIG && virtio_rd(d, VIRTIO_MMIO_MAGIC) == VIRTIO_MAGIC_VALUE &&
           virtio_rd(d, VIRTIO_MMIO_DEVICE_ID) == device_id;
}

int virtio_find(u32 device_id, struct virtio_dev *d) {
    for (u32 i = 0; i < g.nvmmio; i++)
        if (transport_has(i, device_id, d) && virtio_rd(d, VIRTIO_MMIO_VERSION) == 2) return 1;
    return 0;
}

int virtio_find_legacy(u32 device_id) {
    struct virtio_dev d;
    for (u32 i = 0; i < g.nvmmio; i++)
        if (transport_has(i, device_id, &d) && virtio_rd(&d, VIRTIO_MMIO_VERSION) == 1) return 1;
    return 0;
}

const char *virtio_begin(struct virtio_dev *d, u64 want) {
    virtio_wr(d, VIRTIO_MMIO_STATUS, 0);
    virtio_wr(d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
    virtio_wr(d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    u64 offered = 0;
    for (u32 sel = 0; sel < 2; sel++) {
        virtio_wr(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, sel);
        offered |= (u64)virtio_rd(d, VIRTIO_MMIO_DEVICE_FEATURES) << (32 * sel);
    }
    if (!(offered & VIRTIO_F_VERSION_1)) return "device lacks VIRTIO_F_VERSION_1";
    d->features = VIRTIO_F_VERSION_1 | (want & offered);
    for (u32 sel = 0; sel < 2; sel++) {
        virtio_wr(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
        virtio_wr(d, VIRTIO_MMIO_DRIVER_FEATURES, (u32)(d->features >> (32 * sel)));
    }
    virtio_wr(d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
    if (!(virtio_rd(d, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK)) return "FEATURES_OK refused";
    return NULL;
}

const char *virtq_setup(struct virtio_dev *d, struct virtq *q, u16 index, u16 size) {
    if (!size || (size & (size - 1))) return "queue size not a power of two";
    virtio_wr(d, VIRTIO_MMIO_QUEUE_SEL, index);
    if (virtio_rd(d, VIRTIO_MMIO_QUEUE_READY)) return "queue already live";
    if (virtio_rd(d, VIRTIO_MMIO_QUEUE_NUM_MAX) < size) return "queue too small";
    u64 dbytes = 16ULL * size, abytes = 6 + 2ULL * size, ubytes = 6 + 8ULL * size;
    u8 *mem = dma_alloc(dbytes + 4096 + abytes + ubytes, 4096); /* desc | avail ... | used (4 KiB aligned) */
    if (!mem) return "out of DMA memory for a queue";
    u64 used_off = (dbytes + abytes + 4095) & ~4095ULL;
    memset(mem, 0, used_off + ubytes);
    *q = (struct virtq){d->base, index, size, 0, (struct vring_desc *)mem, (struct vring_avail *)(mem + dbytes),
                        (struct vring_used *)(mem + used_off)};
    virtio_wr(d, VIRTIO_MMIO_QUEUE_NUM, size);
    virtio_wr(d, VIRTIO_MMIO_QUEUE_DESC_LOW, (u32)(u64)q->desc);
    virtio_wr(d, VIRTIO_MMIO_QUEUE_DESC_HIGH, (u32)((u64)q->desc >> 32));
    virtio_wr(d, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (u32)(u64)q->avail);
    virtio_wr(d, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, (u32)((u64)q->avail >> 32));
    virtio_wr(d, VIRTIO_MMIO_QUEUE_USED_LOW, (u32)(u64)q->used);
    virtio_wr(d, VIRTIO_MMIO_QUEUE_USED_HIGH, (u32)((u64)q->used >> 32));
    virtio_wr(d, VIRTIO_MMIO_QUEUE_READY, 1);
    if (virtio_rd(d, VIRTIO_MMIO_QUEUE_READY) != 1) return "queue not accepted";
    return NULL;
}

void virtio_driver_ok(struct virtio_dev *d) {
    virtio_wr(d, VIRTIO_MMIO_STATUS,
              VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
}

u64 virtio_irq_enable(struct virtio_dev *d) {
    if (g.cfg.irq_off) return 0;
    u64 r;
    /* Ring 0 runs C for this call: everything the ABI lets a call clobber is clobbered. */
    __asm__ volatile("int %1"
                     : "=a"(r)
                     : "i"(VEC_IRQ_ROUTE), "D"((u64)d->entry)
                     : "rcx", "rdx", "rsi", "r8", "r9", "r10", "r11", "cc", "memory");
    return r;
}

void virtq_push(struct virtq *q, u16 head) {
    volatile struct vring_avail *a = q->avail;
    a->ring[a->idx & (q->size - 1)] = head;
    barrier(); /* x86: stores are not reordered with stores; the compiler must not either */
    a->idx = (u16)(a->idx + 1);
    barrier();
}

int virtq_pop(struct virtq *q, u32 *id, u32 *len) {
    volatile struct vring_used *u = q->used;
    if (u->idx == q->last_used) return 0;
    barrier(); /* the element is read after the index (loads are not reordered on x86) */
    const volatile struct vring_used_elem *e = &u->ring[q->last_used & (q->size - 1)];
    *id = e->id;
    *len = e->len;
    q->last_used++;
    return 1;
}

void virtio_ack(const struct virtio_dev *d) {
    u32 s = virtio_rd(d, VIRTIO_MMIO_INTERRUPT_STATUS);
    if (s) virtio_wr(d, VIRTIO_MMIO_INTERRUPT_ACK, s);
}
