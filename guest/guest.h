/* guest.h — definitions shared by the parts of the ferry test guest (entry.S, smp.S,
 * kernel.c, workload.c, virtio_mmio.c, blk.c): limits, fixed addresses, segment selectors,
 * interrupt vectors, and (C only) the configuration and state that ring 0 hands to the
 * ring-3 workload.
 *
 * Memory layout (guest-physical unless noted; see README.md):
 *   0x80000 .. 0x80fff      AP real-mode trampoline (copied there by the BSP, SIPI vector 0x80)
 *   0x100000 .. __image_end  the image: code, data, bss (page tables, GDT/IDT/TSSs, stacks,
 *                            per-CPU statistics); the loader zeroes bss
 *   RAM >= align_2M(__image_end): 2 MiB chunks holding the working set, then the per-page
 *                            generation array, mapped contiguously at WIN_VIRT (virtual)
 */
#pragma once

#define MAX_CPUS 64
#define KSTACK_SIZE 4096   /* ring-0 stack per AP (exceptions only) */
#define USTACK_SIZE 16384  /* ring-3 stack per CPU */
#define BOOT_STACK_SIZE 16384
#define TRAMPOLINE_PA 0x80000 /* must be 4 KiB aligned and below 1 MiB */

#define SEL_KCODE 0x08
#define SEL_KDATA 0x10
#define SEL_KCODE32 0x18
#define SEL_UDATA 0x23 /* 0x20 | RPL 3 */
#define SEL_UCODE 0x2b /* 0x28 | RPL 3 */
#define SEL_TSS0 0x30  /* + 16 * cpu */
#define GDT_BYTES (SEL_TSS0 + 16 * MAX_CPUS)

#define VEC_POWEROFF 0x30 /* ring-3 callable: power off with the code in %edi */
#define VEC_PARK 0x31     /* ring-3 callable: stop this CPU (cli; hlt) */
#define VEC_IRQ_ROUTE 0x32 /* ring-3 callable: route virtio-mmio entry %edi's IRQ to the BSP */
#define VEC_VIRTIO0 0x40  /* + n: interrupt of virtio-mmio entry n (counted in g.irqs[n]) */
#define VEC_SPURIOUS 0xff /* the LAPIC's spurious vector */
#define VIRTIO_MMIO_MAX 8 /* virtio_mmio.device= entries taken from the command line */
#define LAPIC_EOI_PA 0xfee000b0
#define SHARED_IRQS 0     /* offsetof(struct shared, irqs): the IRQ stubs count there */

#ifndef __ASSEMBLER__
#include "util.h"

#define PAGE_SIZE 4096ULL
#define PAGE_WORDS 512
#define CHUNK_WORDS 64 /* 512 bytes of work between two TSC reads */
#define CHUNKS_PER_PAGE (PAGE_WORDS / CHUNK_WORDS)
#define MiB2 (2ULL << 20)
#define WIN_VIRT (64ULL << 30) /* the working set's virtual address */
#define WIN_MAX (64ULL << 30)  /* the most the window can hold (working set + generations) */
#define MAX_RUNS 64
#define NBUCKETS 17 /* stall histogram: 16, 32, ..., 1048576 us */
#define CLOSED 0x80000000u

enum mode { MODE_IDLE, MODE_DIRTY, MODE_VERIFY, MODE_TLB, MODE_KSM, MODE_BLK, MODE_NET };
/* mode=blk operation (blkop=): the pattern check, or a benchmark (blk.c) */
enum blkop { BLKOP_VERIFY, BLKOP_READ, BLKOP_WRITE, BLKOP_RANDREAD, BLKOP_RANDWRITE };

struct config {
    u32 mode;
    u32 cpus;     /* 0 = take whoever arrives in ~100 ms */
    u64 wss;      /* bytes */
    u64 rate;     /* bytes per second over the whole guest; 0 = no rewrites */
    u32 rate_max; /* rate=max */
    u64 seed;
    u64 tsc_khz; /* 0 = detect */
    u64 ticks;   /* 0 = run forever */
    u64 inject;  /* self-test: at this tick, flip a bit in a working-set page (verify mode) */
    u32 irq_off; /* irq=off: device modes run polled with IF=0 and no IRQ routed */
    u32 blkop;   /* enum blkop */
    u64 blk_bs;  /* blkop other than verify: bytes per request */
    u32 blk_qd;  /* blkop other than verify: requests in flight */
};

/* One virtio_mmio.device=SIZE@BASE:IRQ entry of the command line (virtio_mmio.c). */
struct vmmio_entry {
    u64 base, size;
    u32 irq;
};

/* Devices a ring-3 driver needs: the identity-mapped guest RAM the drivers carve their
 * rings and buffers from (virtio_mmio.c dma_alloc), placed by ring 0 above the image. */
struct dma_pool {
    u64 base, len, used;
};

/* A physically contiguous piece of the window: [voff, voff+len) -> [gpa, gpa+len). */
struct run {
    u64 voff, gpa, len;
};

/* Per-CPU statistics, cumulative, each written only by its CPU and read by the BSP. */
struct pcpu {
    volatile u64 maxslot; /* (epoch & 0xffffff) << 40 | min(largest gap in that epoch, 2^40-1) */
    volatile u64 dirtied;
    volatile u64 corrupt;
    volatile u64 accesses;      /* tlb mode */
    volatile u64 access_cycles; /* tlb mode */
    volatile u64 stalls[NBUCKETS];
} __attribute__((aligned(64)));

struct shared {
    /* Interrupts taken per virtio-mmio entry (vector VEC_VIRTIO0 + n, BSP only); first, at
     * SHARED_IRQS, so the ring-0 stubs in entry.S reach it without C. */
    volatile u64 irqs[VIRTIO_MMIO_MAX];
    /* Written by ring 0 before any CPU enters ring 3. */
    struct config cfg;
    u64 tsc_khz;
    u64 npages; /* working-set pages (0 in idle mode) */
    u8 *ws;     /* = WIN_VIRT */
    u32 *gen;   /* per-page generation, after the working set in the window */
    u32 nruns;
    struct run runs[MAX_RUNS];
    u32 nvmmio; /* virtio_mmio.device= entries, in command-line order */
    struct vmmio_entry vmmio[VIRTIO_MMIO_MAX];
    struct dma_pool dma; /* device modes only; .used grows in ring 3 (BSP) */
    /* Written by the BSP, read by every CPU in its loop. */
    volatile u64 epoch __attribute__((aligned(64))); /* ticks printed so far */
    volatile u32 halt;
    volatile u32 go;
    volatile u32 started;
    volatile u32 ncpus;
    volatile u64 start_tsc;
    /* Updated with atomics. */
    volatile u32 arrived __attribute__((aligned(64))); /* APs checked in; CLOSED once frozen */
    volatile u32 populated;
    volatile s32 corrupt_budget;
    /* mode=blk (blk.c, BSP only): verified chunks (benchmarks: requests completed with status
     * 0), mismatches, requests with an error status, bytes transferred by good requests;
     * blk_dev: the virtio-mmio entry the driver uses (its interrupts are g.irqs[blk_dev]) */
    volatile u64 blk_ok, blk_bad, blk_ioerr, blk_bytes;
    u32 blk_dev;
    /* mode=net (net.c, BSP only): frames sent, requests answered, bad frames, requests not
     * answered for want of a transmit slot; net_dev: the virtio-mmio entry of the card */
    volatile u64 net_tx, net_rx, net_bad, net_txfull;
    u32 net_dev;
    struct pcpu pcpu[MAX_CPUS];
};

extern struct shared g;

/* Ring-3 entry points (workload.c). */
void bsp_user_main(u64 unused) __attribute__((noreturn));
void ap_user_main(u64 unused) __attribute__((noreturn));
/* mode=blk driver (blk.c), ring 3 on the BSP. */
void blk_init(void);
void blk_step(void);
void blk_tick(u64 now); /* the per-second blk lines, from the BSP's tick */
/* mode=net driver (net.c), ring 3 on the BSP. */
void net_init(void);
void net_step(void);
void net_tick(void); /* the per-second net line */
/* Ring 0 (kernel.c): map the 2 MiB page holding pa uncached (PCD|PWT), user-accessible if
 * user; returns 0 if that page is the LAPIC's or the IOAPIC's (never made user-accessible). */
int map_mmio_2m(u64 pa, int user);
/* Ring 0 (kernel.c): identity-map every GiB that [pa, pa+len) touches (below 64 GiB). */
void map_range(u64 pa, u64 len);
/* A device mode (blk; net later) drives virtio devices from ring 3 (both rings use this). */
static inline int device_mode(const struct config *c) { return c->mode == MODE_BLK || c->mode == MODE_NET; }
#endif
