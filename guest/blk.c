/* blk.c — the test guest's virtio-blk driver (mode=blk), over virtio-mmio version 2.
 *
 * It runs in ring 3 on the BSP, like the rest of the workload: ring 0 maps the 2 MiB page
 * holding the virtio-mmio windows (0xd0000000) user-accessible and uncached, so register
 * accesses are ordinary MMIO exits with no emulated ring-0 code on the path. Polled: the
 * guest runs with IF=0 and reads the used ring. One request at a time, descriptors
 * (header R, data R/W, status W) in the image's bss (identity-mapped, virtual = physical).
 *
 * Loop (one step per call of blk_step, never blocking, so ticks keep their pace):
 *   write chunk c (BLK_CHUNK sectors of the pattern) -> wait -> zero the buffer, read it
 *   back -> wait -> verify -> next chunk (wrapping over the first n sectors, n = wss/512
 *   capped at the disk's capacity).
 * Word w (u64) of sector s holds mix64(sm ^ (s << 6 | w)), sm = mix64(seed ^ 0x626c6b),
 * so the image's content is known from seed alone. Per verified chunk: ok or bad; a
 * request with a non-zero status counts in ioerr (a read-only disk: every write).
 */
#include "guest.h"

#define VMMIO 0xd0000000ULL
#define R_MAGIC 0x000
#define R_VERSION 0x004
#define R_DEVICE_ID 0x008
#define R_DEV_FEATURES 0x010
#define R_DEV_FEATURES_SEL 0x014
#define R_DRV_FEATURES 0x020
#define R_DRV_FEATURES_SEL 0x024
#define R_QUEUE_SEL 0x030
#define R_QUEUE_NUM_MAX 0x034
#define R_QUEUE_NUM 0x038
#define R_QUEUE_READY 0x044
#define R_QUEUE_NOTIFY 0x050
#define R_INT_ACK 0x064
#define R_INT_STATUS 0x060
#define R_STATUS 0x070
#define R_DESC_LO 0x080
#define R_DESC_HI 0x084
#define R_AVAIL_LO 0x090
#define R_AVAIL_HI 0x094
#define R_USED_LO 0x0a0
#define R_USED_HI 0x0a4
#define R_CONFIG 0x100
#define QSZ 4
#define BLK_CHUNK 8 /* sectors per request (4 KiB) */

struct desc {
    u64 addr;
    u32 len;
    u16 flags, next;
};
struct blk_req_hdr {
    u32 type, reserved;
    u64 sector;
};

static struct desc vq_desc[QSZ] __attribute__((aligned(4096)));
static struct {
    u16 flags, idx, ring[QSZ];
} vq_avail __attribute__((aligned(4096)));
static struct {
    u16 flags, idx;
    struct {
        u32 id, len;
    } ring[QSZ];
} vq_used __attribute__((aligned(4096)));
static struct blk_req_hdr req_hdr __attribute__((aligned(64)));
static volatile u8 req_status __attribute__((aligned(64)));
static u64 buf[BLK_CHUNK * 64] __attribute__((aligned(4096)));

enum { ST_WRITE, ST_WAIT_WRITE, ST_READ, ST_WAIT_READ };
static u32 state;
static u64 nsect, chunk_sector, sm;
static u16 last_used;

static inline u32 rd(u32 off) { return *(volatile u32 *)(VMMIO + off); }
static inline void wr(u32 off, u32 v) { *(volatile u32 *)(VMMIO + off) = v; }

static __attribute__((noreturn)) void blk_fail(const char *what) {
    struct line l;
    line_init(&l);
    line_str(&l, "guest: error blk ");
    line_str(&l, what);
    line_emit(&l, 0);
    __asm__ volatile("int %0" : : "i"(VEC_POWEROFF), "D"(2) : "memory");
    for (;;) cpu_relax();
}

void blk_init(void) {
    if (rd(R_MAGIC) != 0x74726976 || rd(R_VERSION) != 2 || rd(R_DEVICE_ID) != 2) blk_fail("no virtio-blk device at 0xd0000000");
    wr(R_STATUS, 0);
    wr(R_STATUS, 1);     /* ACKNOWLEDGE */
    wr(R_STATUS, 1 | 2); /* DRIVER */
    wr(R_DEV_FEATURES_SEL, 1);
    if (!(rd(R_DEV_FEATURES) & 1)) blk_fail("device lacks VIRTIO_F_VERSION_1");
    wr(R_DRV_FEATURES_SEL, 0);
    wr(R_DRV_FEATURES, 0);
    wr(R_DRV_FEATURES_SEL, 1);
    wr(R_DRV_FEATURES, 1); /* VERSION_1 only */
    wr(R_STATUS, 1 | 2 | 8);
    if (!(rd(R_STATUS) & 8)) blk_fail("FEATURES_OK refused");
    wr(R_QUEUE_SEL, 0);
    if (rd(R_QUEUE_NUM_MAX) < QSZ) blk_fail("queue too small");
    wr(R_QUEUE_NUM, QSZ);
    wr(R_DESC_LO, (u32)(u64)vq_desc);
    wr(R_DESC_HI, (u32)((u64)vq_desc >> 32));
    wr(R_AVAIL_LO, (u32)(u64)&vq_avail);
    wr(R_AVAIL_HI, (u32)((u64)&vq_avail >> 32));
    wr(R_USED_LO, (u32)(u64)&vq_used);
    wr(R_USED_HI, (u32)((u64)&vq_used >> 32));
    wr(R_QUEUE_READY, 1);
    if (rd(R_QUEUE_READY) != 1) blk_fail("queue not accepted");
    wr(R_STATUS, 1 | 2 | 8 | 4); /* DRIVER_OK */
    u64 cap = rd(R_CONFIG) | (u64)rd(R_CONFIG + 4) << 32;
    nsect = g.cfg.wss / 512;
    if (nsect > cap) nsect = cap;
    nsect -= nsect % BLK_CHUNK;
    if (!nsect) blk_fail("disk smaller than one request");
    sm = mix64(g.cfg.seed ^ 0x626c6b);
    last_used = vq_used.idx;
    state = ST_WRITE;
    struct line l;
    line_init(&l);
    line_str(&l, "guest: blk sectors=");
    line_u64(&l, nsect);
    line_str(&l, " capacity=");
    line_u64(&l, cap);
    line_emit(&l, 0);
}

static void submit(u32 type) {
    req_hdr.type = type;
    req_hdr.reserved = 0;
    req_hdr.sector = chunk_sector;
    req_status = 0xff;
    vq_desc[0] = (struct desc){(u64)&req_hdr, sizeof req_hdr, 1, 1};
    vq_desc[1] = (struct desc){(u64)buf, sizeof buf, (u16)(1 | (type == 0 ? 2 : 0)), 2};
    vq_desc[2] = (struct desc){(u64)&req_status, 1, 2, 0};
    vq_avail.ring[vq_avail.idx % QSZ] = 0;
    barrier();
    vq_avail.idx++;
    barrier();
    wr(R_QUEUE_NOTIFY, 0);
}

static int done(void) {
    barrier();
    if (*(volatile u16 *)&vq_used.idx == last_used) return 0;
    last_used++;
    wr(R_INT_ACK, rd(R_INT_STATUS));
    return 1;
}

void blk_step(void) {
    switch (state) {
        case ST_WRITE:
            for (u32 s = 0; s < BLK_CHUNK; s++)
                for (u32 w = 0; w < 64; w++) buf[s * 64 + w] = mix64(sm ^ ((chunk_sector + s) << 6 | w));
            submit(1);
            state = ST_WAIT_WRITE;
            break;
        case ST_WAIT_WRITE:
            if (!done()) break;
            if (req_status != 0) {
                g.blk_ioerr++;
                chunk_sector = (chunk_sector + BLK_CHUNK) % nsect;
                state = ST_WRITE;
            } else {
                state = ST_READ;
            }
            break;
        case ST_READ:
            for (u32 i = 0; i < BLK_CHUNK * 64; i++) buf[i] = 0;
            submit(0);
            state = ST_WAIT_READ;
            break;
        case ST_WAIT_READ: {
            if (!done()) break;
            if (req_status != 0) {
                g.blk_ioerr++;
            } else {
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
