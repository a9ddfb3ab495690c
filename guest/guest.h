/* guest.h — definitions shared by the parts of the ferry test guest (entry.S, smp.S,
 * kernel.c, workload.c): limits, fixed addresses, segment selectors, and (C only) the
 * configuration and state that ring 0 hands to the ring-3 workload.
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

enum mode { MODE_IDLE, MODE_DIRTY, MODE_VERIFY, MODE_TLB, MODE_KSM, MODE_BLK };

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
    /* Written by ring 0 before any CPU enters ring 3. */
    struct config cfg;
    u64 tsc_khz;
    u64 npages; /* working-set pages (0 in idle mode) */
    u8 *ws;     /* = WIN_VIRT */
    u32 *gen;   /* per-page generation, after the working set in the window */
    u32 nruns;
    struct run runs[MAX_RUNS];
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
    /* mode=blk (blk.c, BSP only): verified chunks, mismatches, requests with an error status */
    volatile u64 blk_ok, blk_bad, blk_ioerr;
    struct pcpu pcpu[MAX_CPUS];
};

extern struct shared g;

/* Ring-3 entry points (workload.c). */
void bsp_user_main(u64 unused) __attribute__((noreturn));
void ap_user_main(u64 unused) __attribute__((noreturn));
/* mode=blk driver (blk.c), ring 3 on the BSP. */
void blk_init(void);
void blk_step(void);
#define VIRTIO_MMIO_PA 0xd0000000ULL
#endif
