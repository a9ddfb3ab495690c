/* net.c — the test guest's virtio-net driver (mode=net), over virtio-mmio version 2.
 *
 * Like blk.c it runs in ring 3 on the BSP on the transport helpers of virtio_mmio.h and
 * polls the used rings; one step per call of net_step, never blocking. Features: VERSION_1
 * and MAC (the card's address is read from config space). Queues of NET_QSZ entries: receive (0) keeps every descriptor posted with a
 * 2 KiB device-writable buffer; transmit (1) sends one 12-byte virtio_net_hdr + frame
 * buffer per descriptor, at most NET_QSZ in flight (completed in order).
 *
 * The frames (Ethernet, type 0x88b5 "local experimental"), payload little-endian:
 *   "FNET" | u8 kind | u8 pad[3] | u32 seq | u64 check
 *   kind 0 hello:   guest -> broadcast, every 100 ms, check = mix64(NET_SALT ^ seq)
 *   kind 1 request: host -> guest,                     check = mix64(NET_SALT ^ seq)
 *   kind 2 reply:   guest -> the requester, same seq, check = mix64(request's check)
 * Counters (g.net_*): tx frames sent, rx valid requests answered, bad frames of type
 * 0x88b5 that fail the magic or the check. A request that finds the transmit ring full
 * is not answered (txfull). Rings and buffers come from the DMA pool (virtio_mmio.h).
 */
#include "virtio_mmio.h"

#define NET_QSZ 16
#define NET_RXBUF 2048
#define NET_HDR 12
#define NET_FRAME 64 /* what the guest sends: 14 header + 24 payload, padded */
#define NET_TYPE_HI 0x88
#define NET_TYPE_LO 0xb5
#define NET_SALT 0x6e6574ULL
#define NET_HELLO_MS 100
#define NET_F_MAC (1ULL << 5)

static struct virtio_dev dev;
static struct virtq rxq, txq;
static u8 (*rxbuf)[NET_RXBUF];
static u8 (*txbuf)[NET_HDR + NET_FRAME];
static u8 mac[6];
static u64 next_hello, hello_seq;
static u16 tx_avail, tx_done;

static void put32(u8 *p, u32 v) {
    for (int i = 0; i < 4; i++) p[i] = (u8)(v >> (8 * i));
}
static void put64(u8 *p, u64 v) {
    for (int i = 0; i < 8; i++) p[i] = (u8)(v >> (8 * i));
}
static u32 get32(const u8 *p) { return p[0] | (u32)p[1] << 8 | (u32)p[2] << 16 | (u32)p[3] << 24; }
static u64 get64(const u8 *p) { return get32(p) | (u64)get32(p + 4) << 32; }

void net_init(void) {
    const char *err;
    if (!virtio_find(1, &dev)) virtio_fail("net", "no virtio-net device among the virtio-mmio windows (command line or ACPI DSDT)");
    if ((err = virtio_begin(&dev, NET_F_MAC))) virtio_fail("net", err);
    if (!(dev.features & NET_F_MAC)) virtio_fail("net", "the device has no MAC address");
    if ((err = virtq_setup(&dev, &rxq, 0, NET_QSZ))) virtio_fail("net", err);
    if ((err = virtq_setup(&dev, &txq, 1, NET_QSZ))) virtio_fail("net", err);
    rxbuf = dma_alloc(NET_QSZ * NET_RXBUF, 4096);
    txbuf = dma_alloc(NET_QSZ * sizeof *txbuf, 64);
    if (!rxbuf || !txbuf) virtio_fail("net", "no memory for buffers");
    for (int i = 0; i < 6; i++) mac[i] = virtio_cfg8(&dev, (u32)i);
    g.net_dev = dev.entry;
    virtio_driver_ok(&dev);
    virtio_irq_enable(&dev);
    for (u16 i = 0; i < NET_QSZ; i++) {
        rxq.desc[i] = (struct vring_desc){(u64)rxbuf[i], NET_RXBUF, VRING_DESC_F_WRITE, 0};
        txq.desc[i] = (struct vring_desc){(u64)txbuf[i], NET_HDR + NET_FRAME, 0, 0};
        virtq_push(&rxq, i);
    }
    virtq_kick(&rxq);
    struct line l;
    line_init(&l);
    line_str(&l, "guest: net mac=");
    for (int i = 0; i < 6; i++) {
        static const char hex[] = "0123456789abcdef";
        char b[3] = {hex[mac[i] >> 4], hex[mac[i] & 15], ':'};
        line_strn(&l, b, i < 5 ? 3 : 2);
    }
    line_str(&l, " base=");
    line_hex(&l, dev.base);
    line_str(&l, " irq=");
    line_u64(&l, dev.irq);
    line_emit(&l, 0);
    next_hello = rdtsc();
}

/* Queues one frame (kind, seq, check) to `dst`; 0 when the transmit ring is full. */
static int send(const u8 *dst, u8 kind, u32 seq, u64 check) {
    if ((u16)(tx_avail - tx_done) >= NET_QSZ) return 0;
    u16 id = tx_avail % NET_QSZ;
    u8 *f = txbuf[id] + NET_HDR;
    memset(txbuf[id], 0, sizeof txbuf[id]);
    memcpy(f, dst, 6);
    memcpy(f + 6, mac, 6);
    f[12] = NET_TYPE_HI;
    f[13] = NET_TYPE_LO;
    memcpy(f + 14, "FNET", 4);
    f[18] = kind;
    put32(f + 22, seq);
    put64(f + 26, check);
    virtq_push(&txq, id);
    tx_avail++;
    g.net_tx++;
    return 1;
}

void net_step(void) {
    static const u8 bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    int kick_tx = 0, kick_rx = 0, acked = 0;
    u32 id, len;
    while (virtq_pop(&txq, &id, &len)) { /* completed in order: only the count matters */
        tx_done++;
        acked = 1;
    }
    while (virtq_pop(&rxq, &id, &len)) {
        id %= NET_QSZ;
        const u8 *f = rxbuf[id] + NET_HDR;
        if (len >= NET_HDR + 34 && f[12] == NET_TYPE_HI && f[13] == NET_TYPE_LO) {
            u32 seq = get32(f + 22);
            u64 check = get64(f + 26);
            if (f[14] != 'F' || f[15] != 'N' || f[16] != 'E' || f[17] != 'T' || f[18] != 1 || check != mix64(NET_SALT ^ seq)) {
                g.net_bad++;
            } else if (send(f + 6, 2, seq, mix64(check))) {
                g.net_rx++;
                kick_tx = 1;
            } else {
                g.net_txfull++;
            }
        }
        virtq_push(&rxq, (u16)id);
        kick_rx = acked = 1;
    }
    u64 now = rdtsc();
    if ((s64)(now - next_hello) >= 0) {
        next_hello = now + g.tsc_khz * NET_HELLO_MS;
        if (send(bcast, 0, (u32)hello_seq, mix64(NET_SALT ^ hello_seq))) {
            hello_seq++;
            kick_tx = 1;
        }
    }
    if (kick_rx) virtq_kick(&rxq);
    if (kick_tx) virtq_kick(&txq);
    if (acked) virtio_ack(&dev);
}

void net_tick(void) {
    struct line l;
    line_init(&l);
    line_str(&l, "guest: net tx=");
    line_u64(&l, g.net_tx);
    line_str(&l, " rx=");
    line_u64(&l, g.net_rx);
    line_str(&l, " bad=");
    line_u64(&l, g.net_bad);
    line_str(&l, " txfull=");
    line_u64(&l, g.net_txfull);
    line_str(&l, " irqs=");
    line_u64(&l, g.irqs[g.net_dev]);
    line_emit(&l, 0);
}
