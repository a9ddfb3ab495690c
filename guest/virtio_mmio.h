/* virtio_mmio.h — the test guest's virtio-mmio (version 2) transport, shared by its drivers
 * (blk.c; a net driver: device id 1, queues rx=0 and tx=1, uses the same calls).
 *
 * Ring 0 (kernel.c) takes every `virtio_mmio.device=SIZE@BASE:IRQ[:ID]` word of the command
 * line into g.vmmio[] (ferry appends `4K@0xd0000000:5`, ...; QEMU microvm with -kernel
 * `512@0xfeb00e00:12`, ... for the transports that hold a device), maps each entry's 2 MiB
 * page user-accessible and uncached in the modes that drive devices, and, when a driver asks
 * (virtio_irq_enable, a ring-3 service call), routes the entry's IOAPIC pin to the BSP as
 * vector VEC_VIRTIO0 + entry; entry.S counts those interrupts in g.irqs[entry].
 *
 * Ring 3 (the drivers, BSP only): find a device by id, do the init handshake, set up split
 * virtqueues whose rings come from g.dma (identity-mapped RAM above the image, virtual =
 * physical, so ring addresses are what the device sees), and drive them by polling the used
 * ring. Register accesses are plain MMIO exits (no ring-0 code on the path).
 *
 * A driver, in order:
 *   struct virtio_dev d; struct virtq q;
 *   if (!virtio_find(1, &d)) virtio_fail("net", "no virtio-net device ...");
 *   if ((err = virtio_begin(&d, wanted_features))) virtio_fail("net", err);   // FEATURES_OK
 *   if ((err = virtq_setup(&d, &q, 0, 64))) virtio_fail("net", err);          // each queue
 *   (config space: virtio_cfg8/virtio_cfg32)
 *   virtio_driver_ok(&d); virtio_irq_enable(&d);
 *   loop: fill q.desc[...], virtq_push(&q, head) ... virtq_kick(&q);
 *         while (virtq_pop(&q, &id, &len)) ...; virtio_ack(&d) after consuming.
 */
#pragma once

#include "guest.h"

/* Registers (byte offsets in a device's window). */
#define VIRTIO_MMIO_MAGIC 0x000
#define VIRTIO_MMIO_VERSION 0x004
#define VIRTIO_MMIO_DEVICE_ID 0x008
#define VIRTIO_MMIO_DEVICE_FEATURES 0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES 0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_QUEUE_SEL 0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX 0x034
#define VIRTIO_MMIO_QUEUE_NUM 0x038
#define VIRTIO_MMIO_QUEUE_READY 0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY 0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS 0x060
#define VIRTIO_MMIO_INTERRUPT_ACK 0x064
#define VIRTIO_MMIO_STATUS 0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW 0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH 0x084
#define VIRTIO_MMIO_QUEUE_AVAIL_LOW 0x090
#define VIRTIO_MMIO_QUEUE_AVAIL_HIGH 0x094
#define VIRTIO_MMIO_QUEUE_USED_LOW 0x0a0
#define VIRTIO_MMIO_QUEUE_USED_HIGH 0x0a4
#define VIRTIO_MMIO_CONFIG 0x100

#define VIRTIO_MAGIC_VALUE 0x74726976 /* "virt" */
#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_F_VERSION_1 (1ULL << 32)
#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2 /* device-writable */

struct vring_desc {
    u64 addr;
    u32 len;
    u16 flags, next;
};
struct vring_avail {
    u16 flags, idx, ring[];
};
struct vring_used_elem {
    u32 id, len;
};
struct vring_used {
    u16 flags, idx;
    struct vring_used_elem ring[];
};

/* A device the driver found (virtio_find). */
struct virtio_dev {
    u32 entry;    /* index in g.vmmio; its interrupts are counted in g.irqs[entry] */
    u32 irq;      /* its IOAPIC pin (GSI) */
    u64 base;     /* its window: identity-mapped, user-accessible, uncached */
    u64 features; /* negotiated (virtio_begin), VIRTIO_F_VERSION_1 included */
};

/* A split virtqueue (virtq_setup). desc/avail/used are in g.dma, zeroed. */
struct virtq {
    u64 base;       /* the device's window */
    u16 index;      /* queue number */
    u16 size;       /* entries, a power of two */
    u16 last_used;  /* next used-ring index to consume (virtq_pop) */
    struct vring_desc *desc;
    struct vring_avail *avail;
    struct vring_used *used;
};

/* ---- ring 0 (kernel.c) ---- */
/* One virtio_mmio.device value, [v, v+n): SIZE (decimal or 0x hex, optional K/M/G suffix) @
 * BASE (0x hex or decimal) : IRQ (decimal) [: ID, ignored]. Appends it to g.vmmio (entries
 * after the 8th are ignored); returns 0 if malformed (size 0, a window crossing a 2 MiB page
 * or reaching past 4 GiB, an IRQ over 47). */
int vmmio_parse(const char *v, u32 n);
/* The same checks and append for one window (vmmio_parse, and the ACPI path). */
int vmmio_add(u64 base, u64 size, u64 irq);
/* acpi.c: with no virtio_mmio.device= words, the LNRO0005 devices of the DSDT that the RSDP
 * at rsdp_pa leads to (hvm_start_info.rsdp_paddr; 0: none), in their order, through
 * vmmio_add. Tables with a bad signature or checksum are ignored. */
void vmmio_from_acpi(u64 rsdp_pa);
/* Maps each entry's 2 MiB page user-accessible and uncached (device modes); returns 0 if an
 * entry sits in the LAPIC's or IOAPIC's 2 MiB page. */
int vmmio_map(void);
/* The VEC_IRQ_ROUTE service: programs the IOAPIC redirection entry of g.vmmio[entry].irq
 * (edge, active high, fixed, physical destination = this CPU's APIC id, vector
 * VEC_VIRTIO0 + entry, unmasked). Pins 0-23 on the IOAPIC at 0xfec00000, 24-47 on a second
 * one at 0xfec10000 (QEMU microvm with ioapic2). Returns 0, or 1 = no such entry, 2 = the
 * pin is beyond the IOAPIC's redirection entries. */
u64 vmmio_route(u64 entry);

/* ---- ring 3 (drivers, BSP) ---- */
static inline u32 virtio_rd(const struct virtio_dev *d, u32 off) { return *(volatile u32 *)(d->base + off); }
static inline void virtio_wr(const struct virtio_dev *d, u32 off, u32 v) { *(volatile u32 *)(d->base + off) = v; }
static inline u8 virtio_cfg8(const struct virtio_dev *d, u32 off) { return *(volatile u8 *)(d->base + VIRTIO_MMIO_CONFIG + off); }
static inline u32 virtio_cfg32(const struct virtio_dev *d, u32 off) { return virtio_rd(d, VIRTIO_MMIO_CONFIG + off); }

/* The first entry (command-line order) with magic "virt", version 2 and this DeviceID
 * (1 = net, 2 = block): fills *d and returns 1; else returns 0. */
int virtio_find(u32 device_id, struct virtio_dev *d);
/* 1 if an entry holds such a device behind a legacy (version 1) transport, which the
 * drivers do not support (QEMU's default: -global virtio-mmio.force-legacy=false fixes it):
 * for the error message after virtio_find found nothing. */
int virtio_find_legacy(u32 device_id);
/* Reset, ACKNOWLEDGE, DRIVER, features = VERSION_1 | (want & offered), FEATURES_OK and its
 * read-back. NULL on success (d->features set), else what failed (for virtio_fail). */
const char *virtio_begin(struct virtio_dev *d, u64 want);
/* Queue `index` with `size` entries (a power of two; fails if over QueueNumMax): rings from
 * g.dma, zeroed, addresses programmed, QueueReady = 1. Between virtio_begin and
 * virtio_driver_ok. NULL on success, else what failed. */
const char *virtq_setup(struct virtio_dev *d, struct virtq *q, u16 index, u16 size);
void virtio_driver_ok(struct virtio_dev *d);
/* Unless irq=off: asks ring 0 to route the device's IRQ to the BSP (vmmio_route); the BSP
 * runs its ring-3 loop with IF=1 in device modes, and each interrupt is counted. The
 * drivers still poll; the interrupt only counts. Returns the service's result (0 = ok). */
u64 virtio_irq_enable(struct virtio_dev *d);
/* Makes the chain starting at descriptor `head` available (no notification). */
void virtq_push(struct virtq *q, u16 head);
/* QueueNotify: the device looks at the avail ring (one MMIO exit). */
static inline void virtq_kick(const struct virtq *q) { *(volatile u32 *)(q->base + VIRTIO_MMIO_QUEUE_NOTIFY) = q->index; }
/* Consumes one used element: 1 with *id (the chain's head) and *len, or 0 if none. */
int virtq_pop(struct virtq *q, u32 *id, u32 *len);
/* Acknowledges what InterruptStatus shows (after consuming used elements). */
void virtio_ack(const struct virtio_dev *d);
/* Identity-mapped RAM for rings and buffers, from g.dma (not zeroed); NULL when the pool
 * (up to 64 MiB above the image, device modes) is exhausted. align: a power of two. */
void *dma_alloc(u64 bytes, u64 align);
/* `guest: error DRIVER WHAT` and power off with code 2. */
void virtio_fail(const char *driver, const char *what) __attribute__((noreturn));
