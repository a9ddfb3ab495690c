/* blk.c — the test guest's virtio-blk driver (mode=blk), on the virtio-mmio transport of
 * virtio_mmio.c: the first device with DeviceID 2 among the command line's
 * virtio_mmio.device= entries.
 *
 * It runs in ring 3 on the BSP, like the rest of the workload, so register accesses are
 * ordinary MMIO exits with no emulated ring-0 code on the path. Polled: each loop step looks
 * at the used ring. Unless irq=off, the device's IRQ is routed to the BSP, which runs with
 * IF=1; the interrupt only counts (g.irqs[g.blk_dev], the `irqs=` field). Rings, request
 * headers, status bytes and data buffers are in g.dma (identity-mapped RAM, virtual =
 * physical). A request is 3 descriptors: header (R), data (R or W), status (W). Features:
 * VERSION_1 and FLUSH (never used; negotiated so that the device's write cache stays on).
 *
 * blkop=verify (default), one request in flight (one step per call of blk_step, never
 * blocking, so ticks keep their pace):
 *   write chunk c (BLK_CHUNK sectors of the pattern) -> wait -> zero the buffer, read it
 *   back -> wait -> verify -> next chunk (wrapping over the first n sectors, n = wss/512
 *   capped at the disk's capacity).
 * Word w (u64) of sector s holds mix64(sm ^ (s << 6 | w)), sm = mix64(seed ^ 0x626c6b),
 * so the image's content is known from seed alone. Per verified chunk: ok or bad; a
 * request with a non-zero status counts in ioerr (a read-only disk: every write).
 *
 * blkop=read|write|randread|randwrite (the benchmark): qd requests of bs bytes each kept in
 * flight over the first n sectors (sequential: wrapping; random: uniform over the bs-aligned
 * blocks, xorshift from seed). Each step takes every completed request, resubmits its slot
 * at the next offset, acks InterruptStatus and notifies once. ok counts requests completed
 * with status 0; once a second `guest: blkbench ...` gives the rate over the last second.
 */
#include "virtio_mmio.h"

#define BLK_CHUNK 8 /* sectors per verify request (4 KiB) */
#define BLK_T_IN 0
#define BLK_T_OUT 1
#define DESC_PER_REQ 3
#define VIRTIO_BLK_F_FLUSH (1ULL << 9)

struct blk_req_hdr {
    u32 type, reserved;
    u64 sector;
};
/* One request slot's device-visible bytes: header (R) and status byte (W). */
struct slot {
    struct blk_req_hdr hdr;
    volatile u8 status;
} __attribute__((aligned(64)));

enum { ST_WRITE, ST_WAIT_WRITE, ST_READ, ST_WAIT_READ };
static struct virtio_dev dev;
static struct virtq vq;
static struct slot *slots;
static u8 *bufs; /* qd buffers of bs bytes (verify: one of BLK_CHUNK sectors) */
static u64 bs, nsect, sm;
static u32 qd, op, state, started;
static u64 chunk_sector;     /* verify */
static u64 nblocks, cursor, xs; /* benchmark: blocks of bs, next sequential block, xorshift */
static u64 snap_tsc, snap_ok, snap_bytes; /* blk_tick: the previous report */

static const char *const op_names[] = {"verify", "read", "write", "randread", "randwrite"};

static void say_fail(const char *what) { virtio_fail("blk", what); }

void blk_init(void) {
    op = g.cfg.blkop;
    qd = op == BLKOP_VERIFY ? 1 : g.cfg.blk_qd;
    bs = op == BLKOP_VERIFY ? BLK_CHUNK * 512 : g.cfg.blk_bs;
    if (!g.nvmmio) say_fail("no virtio-mmio device (none on the command line, none in the ACPI DSDT)");
    if (!virtio_find(2, &dev)) {
        if (virtio_find_legacy(2)) say_fail("virtio-blk device behind a legacy (version 1) virtio-mmio transport: version 2 needed");
        say_fail("no virtio-blk device among the virtio-mmio windows");
    }
    g.blk_dev = dev.entry;
    /* FLUSH, as Linux negotiates it: without it a device may (QEMU does) fall back to
     * writethrough, a data sync per write, which is not what the benchmark compares. */
    const char *err = virtio_begin(&dev, VIRTIO_BLK_F_FLUSH);
    u16 qsize = 4;
    while (qsize < DESC_PER_REQ * qd) qsize = (u16)(qsize * 2);
    if (!err) err = virtq_setup(&dev, &vq, 0, qsize);
    if (err) say_fail(err);
    slots = dma_alloc(sizeof(struct slot) * qd, 64);
    bufs = dma_alloc(bs * qd, 4096);
    if (!slots || !bufs) say_fail("out of DMA memory for the buffers (qd x bs too large for the RAM above the image)");
    virtio_driver_ok(&dev);
    u64 cap = virtio_cfg32(&dev, 0) | (u64)virtio_cfg32(&dev, 4) << 32;
    nsect = g.cfg.wss / 512;
    if (nsect > cap) nsect = cap;
    nsect -= nsect % (bs / 512);
    if (!nsect) say_fail("disk smaller than one request");
    nblocks = nsect / (bs / 512);
    sm = mix64(g.cfg.seed ^ 0x626c6b);
    xs = mix64(g.cfg.seed ^ 0x72616e64) | 1;
    if (op == BLKOP_WRITE || op == BLKOP_RANDWRITE) /* something other than zeroes to write */
        for (u64 i = 0; i < bs * qd / 8; i++) ((u64 *)bufs)[i] = mix64(sm ^ i);
    state = ST_WRITE;
    if (virtio_irq_enable(&dev)) say_fail("IRQ not routable (pin beyond the IOAPIC's entries)");
    struct line l;
    line_init(&l);
    line_str(&l, "guest: blk sectors=");
    line_u64(&l, nsect);
    line_str(&l, " capacity=");
    line_u64(&l, cap);
    line_str(&l, " base=");
    line_hex(&l, dev.base);
    line_str(&l, " irq=");
    line_u64(&l, dev.irq);
    line_emit(&l, 0);
}

/* Fills slot s's three descriptors for a request of bs bytes at `sector` and makes it
 * available (no notification). */
static void submit(u32 s, u32 type, u64 sector) {
    struct slot *sl = &slots[s];
    u16 d = (u16)(s * DESC_PER_REQ);
    sl->hdr = (struct blk_req_hdr){type, 0, sector};
    sl->status = 0xff;
    vq.desc[d] = (struct vring_desc){(u64)&sl->hdr, sizeof sl->hdr, VRING_DESC_F_NEXT, (u16)(d + 1)};
    vq.desc[d + 1] = (struct vring_desc){(u64)(bufs + s * bs), (u32)bs,
                                         (u16)(VRING_DESC_F_NEXT | (type == BLK_T_IN ? VRING_DESC_F_WRITE : 0)), (u16)(d + 2)};
    vq.desc[d + 2] = (struct vring_desc){(u64)&sl->status, 1, VRING_DESC_F_WRITE, 0};
    virtq_push(&vq, d);
}

/* verify: the one request in flight completed. */
static int done(void) {
    u32 id, len;
    if (!virtq_pop(&vq, &id, &len)) return 0;
    virtio_ack(&dev);
    return 1;
}

static void verify_step(void) {
    u64 *buf = (u64 *)bufs;
    switch (state) {
        case ST_WRITE:
            for (u32 s = 0; s < BLK_CHUNK; s++)
                for (u32 w = 0; w < 64; w++) buf[s * 64 + w] = mix64(sm ^ ((chunk_sector + s) << 6 | w));
            submit(0, BLK_T_OUT, chunk_sector);
            virtq_kick(&vq);
            state = ST_WAIT_WRITE;
            break;
        case ST_WAIT_WRITE:
            if (!done()) break;
            if (slots[0].status != 0) {
                g.blk_ioerr++;
                chunk_sector = (chunk_sector + BLK_CHUNK) % nsect;
                state = ST_WRITE;
            } else {
                g.blk_bytes += bs;
                state = ST_READ;
            }
            break;
        case ST_READ:
            for (u32 i = 0; i < BLK_CHUNK * 64; i++) buf[i] = 0;
            submit(0, BLK_T_IN, chunk_sector);
            virtq_kick(&vq);
            state = ST_WAIT_READ;
            break;
        case ST_WAIT_READ: {
            if (!done()) break;
            if (slots[0].status != 0) {
                g.blk_ioerr++;
            } else {
                g.blk_bytes += bs;
                u64 d = 0;
                for (u32 s = 0; s < BLK_CHUNK; s++)
                    for (u32 w = 0; w < 64; w++) d |= buf[s * 64 + w] ^ mix64(sm ^ ((chunk_sector + s) << 6 | w));
                if (d) g.blk_bad++;
                else g.blk_ok++;
            }
            chunk_sector = (chunk_sector + BLK_CHUNK) % nsect;
            state = ST_WRITE;
            break;
        }
    }
}

/* benchmark: the next request of slot s. */
static void bench_submit(u32 s) {
    u64 block;
    if (op == BLKOP_RANDREAD || op == BLKOP_RANDWRITE) {
        xs ^= xs << 13;
        xs ^= xs >> 7;
        xs ^= xs << 17;
        block = (u64)(((unsigned __int128)xs * nblocks) >> 64);
    } else {
        block = cursor;
        if (++cursor == nblocks) cursor = 0;
    }
    submit(s, op == BLKOP_READ || op == BLKOP_RANDREAD ? BLK_T_IN : BLK_T_OUT, block * (bs / 512));
}

static void bench_step(void) {
    if (!started) {
        for (u32 s = 0; s < qd; s++) bench_submit(s);
        virtq_kick(&vq);
        started = 1;
        return;
    }
    u32 id, len, n = 0;
    while (n < qd && virtq_pop(&vq, &id, &len)) {
        u32 s = id / DESC_PER_REQ;
        if (s >= qd) continue; /* not ours: cannot happen */
        if (slots[s].status == 0) g.blk_ok++, g.blk_bytes += bs;
        else g.blk_ioerr++;
        bench_submit(s);
        n++;
    }
    if (n) {
        virtio_ack(&dev);
        virtq_kick(&vq);
    }
}

void blk_step(void) {
    if (op == BLKOP_VERIFY) verify_step();
    else bench_step();
}

void blk_tick(u64 now) {
    struct line l;
    line_init(&l);
    line_str(&l, "guest: blk ok=");
    line_u64(&l, g.blk_ok);
    line_str(&l, " bad=");
    line_u64(&l, g.blk_bad);
    line_str(&l, " ioerr=");
    line_u64(&l, g.blk_ioerr);
    line_str(&l, " irqs=");
    line_u64(&l, g.irqs[g.blk_dev]);
    line_emit(&l, 0);
    if (op == BLKOP_VERIFY) return;
    /* Rates over the time since the previous report (a stopped VM's gap included). */
    if (!snap_tsc) snap_tsc = g.start_tsc;
    u64 us = (now - snap_tsc) * 1000 / g.tsc_khz, ok = g.blk_ok, bytes = g.blk_bytes;
    if (!us) us = 1;
    u64 bps = (bytes - snap_bytes) * 1000000 / us;
    line_init(&l);
    line_str(&l, "guest: blkbench op=");
    line_str(&l, op_names[op]);
    line_str(&l, " bs=");
    line_u64(&l, bs);
    line_str(&l, " qd=");
    line_u64(&l, qd);
    line_str(&l, " iops=");
    line_u64(&l, (ok - snap_ok) * 1000000 / us);
    line_str(&l, " mibps=");
    line_fix2(&l, bps * 100 / (1ULL << 20));
    line_emit(&l, 0);
    snap_tsc = now, snap_ok = ok, snap_bytes = bytes;
}
