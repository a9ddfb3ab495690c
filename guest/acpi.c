/* acpi.c — ring 0: the virtio-mmio windows a DSDT declares, for when the command line has no
 * virtio_mmio.device= words (ferry with ACPI, its default, appends none; neither does QEMU
 * microvm with ACPI on). RSDP (hvm_start_info.rsdp_paddr) -> XSDT -> FACP -> DSDT, every
 * table's checksum checked and its length capped; then each "LNRO0005" string of the DSDT
 * (a virtio-mmio device's _HID, in the order the devices appear) and the _CRS buffer that
 * follows it: its Memory32Fixed descriptor gives the window, its Extended Interrupt
 * descriptor the IRQ. Not an AML interpreter: it reads the static Name() objects ferry and
 * QEMU write, and skips what it does not recognise. */
#include "virtio_mmio.h"

enum { MAX_TABLE = 1 << 20, CRS_WINDOW = 256 };

static u32 rd32(const u8 *p) { return (u32)p[0] | (u32)p[1] << 8 | (u32)p[2] << 16 | (u32)p[3] << 24; }
static u64 rd64(const u8 *p) { return rd32(p) | (u64)rd32(p + 4) << 32; }

static int bytes_eq(const u8 *p, const char *lit, u32 n) {
    for (u32 i = 0; i < n; i++)
        if (p[i] != (u8)lit[i]) return 0;
    return 1;
}

static int sum_zero(const u8 *p, u32 n) {
    u8 s = 0;
    for (u32 i = 0; i < n; i++) s = (u8)(s + p[i]);
    return s == 0;
}

/* The table at pa with this signature, mapped and checksummed; its length in *len. */
static const u8 *table(u64 pa, const char *sig, u32 *len) {
    if (!pa || pa >= (4ULL << 30)) return 0;
    map_range(pa, 36);
    const u8 *t = (const u8 *)pa;
    *len = rd32(t + 4);
    if ((sig && !bytes_eq(t, sig, 4)) || *len < 36 || *len > MAX_TABLE) return 0;
    map_range(pa, *len);
    return sum_zero(t, *len) ? t : 0;
}

/* One _CRS buffer at p (after "_CRS"): BufferOp, PkgLength, BufferSize, descriptors. */
static void read_crs(const u8 *p, const u8 *end) {
    if (p >= end || *p++ != 0x11) return;
    u32 extra = p < end ? (u32)(*p >> 6) : 0;
    u32 pkg = extra ? (*p & 0x0f) : (*p & 0x3f);
    for (u32 i = 1; i <= extra && p + i < end; i++) pkg |= (u32)p[i] << (4 + 8 * (i - 1));
    const u8 *buf_end = p + pkg;
    p += 1 + extra;
    if (buf_end > end || p >= buf_end) return;
    if (*p == 0x0a) p += 2;      /* BytePrefix */
    else if (*p == 0x0b) p += 3; /* WordPrefix */
    else p += 1;                 /* ZeroOp, OneOp */
    u64 base = 0, size = 0, irq = ~0ULL;
    while (p < buf_end) {
        u8 tag = *p;
        if (tag & 0x80) { /* large item: type, 16-bit length */
            if (p + 3 > buf_end) return;
            u32 n = p[1] | (u32)p[2] << 8;
            const u8 *b = p + 3;
            if (b + n > buf_end) return;
            if (tag == 0x86 && n >= 9) base = rd32(b + 1), size = rd32(b + 5);
            if (tag == 0x89 && n >= 6 && b[1] >= 1) irq = rd32(b + 2);
            p = b + n;
        } else {
            if (((tag >> 3) & 0xf) == 0xf) break; /* end tag */
            p += 1 + (tag & 7);
        }
    }
    if (size && irq != ~0ULL) vmmio_add(base, size, irq);
}

void vmmio_from_acpi(u64 rsdp_pa) {
    if (!rsdp_pa || rsdp_pa >= (4ULL << 30)) return;
    map_range(rsdp_pa, 36);
    const u8 *r = (const u8 *)rsdp_pa;
    if (!bytes_eq(r, "RSD PTR ", 8) || !sum_zero(r, 20) || r[15] < 2 || !sum_zero(r, 36)) return;
    u32 len;
    const u8 *x = table(rd64(r + 24), "XSDT", &len);
    if (!x) return;
    const u8 *dsdt = 0;
    u32 dlen = 0;
    for (u32 off = 36; off + 8 <= len && !dsdt; off += 8) {
        u32 flen;
        const u8 *f = table(rd64(x + off), "FACP", &flen);
        if (!f) continue;
        u64 pa = flen >= 148 ? rd64(f + 140) : 0; /* X_DSDT, else DSDT */
        if (!pa && flen >= 44) pa = rd32(f + 40);
        dsdt = table(pa, "DSDT", &dlen);
    }
    if (!dsdt) return;
    const u8 *end = dsdt + dlen;
    for (const u8 *p = dsdt + 36; p + 10 <= end; p++) {
        if (p[0] != 0x0d || !bytes_eq(p + 1, "LNRO0005", 9)) continue;
        const u8 *limit = p + CRS_WINDOW < end ? p + CRS_WINDOW : end;
        for (const u8 *q = p + 10; q + 5 <= limit; q++)
            if (q[0] == 0x08 && bytes_eq(q + 1, "_CRS", 4)) {
                read_crs(q + 5, end);
                break;
            }
    }
}
