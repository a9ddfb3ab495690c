/* util.c — serial output, integer formatting and command-line value parsing for the ferry
 * test guest. Runs in ring 0 (emulated, slow: keep it short) and ring 3 (native). */
#include "util.h"

#define COM1 0x3f8

static volatile u32 serial_lock;

void *memcpy(void *dst, const void *src, usize n) {
    u8 *d = dst;
    const u8 *s = src;
    while (n--) *d++ = *s++;
    return dst;
}

void *memset(void *dst, int c, usize n) {
    u8 *d = dst;
    while (n--) *d++ = (u8)c;
    return dst;
}

void serial_init(void) {
    outb(COM1 + 1, 0x00); /* no interrupts */
    outb(COM1 + 3, 0x80); /* DLAB */
    outb(COM1 + 0, 0x01); /* 115200 baud */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03); /* 8N1 */
    outb(COM1 + 2, 0x07); /* FIFO on, cleared */
    outb(COM1 + 4, 0x03); /* DTR, RTS */
}

void serial_write(const char *s, u32 n) {
    for (u32 i = 0; i < n; i++) {
        for (u32 spin = 0; spin < 100000 && !(inb(COM1 + 5) & 0x20); spin++) cpu_relax();
        outb(COM1, (u8)s[i]);
    }
}

void line_init(struct line *l) { l->n = 0; }

void line_strn(struct line *l, const char *s, u32 n) {
    for (u32 i = 0; i < n && l->n < sizeof l->buf - 1; i++) l->buf[l->n++] = s[i];
}

void line_str(struct line *l, const char *s) {
    while (*s && l->n < sizeof l->buf - 1) l->buf[l->n++] = *s++;
}

void line_u64(struct line *l, u64 v) {
    char t[20];
    u32 k = 0;
    do {
        t[k++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (k && l->n < sizeof l->buf - 1) l->buf[l->n++] = t[--k];
}

void line_hex(struct line *l, u64 v) {
    char t[16];
    u32 k = 0;
    do {
        t[k++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    line_str(l, "0x");
    while (k && l->n < sizeof l->buf - 1) l->buf[l->n++] = t[--k];
}

void line_fix2(struct line *l, u64 v100) {
    line_u64(l, v100 / 100);
    line_str(l, ".");
    line_u64(l, v100 / 10 % 10);
    line_u64(l, v100 % 10);
}

void line_emit(struct line *l, u64 max_spin) {
    l->buf[l->n++] = '\n';
    u64 spin = 0;
    int locked = 0;
    for (;;) {
        if (!__atomic_exchange_n(&serial_lock, 1, __ATOMIC_ACQUIRE)) {
            locked = 1;
            break;
        }
        if (max_spin && ++spin >= max_spin) break; /* write anyway (fault path) */
        cpu_relax();
    }
    serial_write(l->buf, l->n);
    if (locked) __atomic_store_n(&serial_lock, 0, __ATOMIC_RELEASE);
    l->n--;
}

int str_eq(const char *s, u32 n, const char *lit) {
    u32 i = 0;
    for (; i < n; i++)
        if (lit[i] != s[i]) return 0;
    return lit[i] == 0;
}

int parse_u64(const char *s, u32 n, u64 *out) {
    u64 v = 0;
    if (n == 0) return 0;
    if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        for (u32 i = 2; i < n; i++) {
            char c = s[i];
            u64 d;
            if (c >= '0' && c <= '9') d = (u64)(c - '0');
            else if (c >= 'a' && c <= 'f') d = (u64)(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') d = (u64)(c - 'A' + 10);
            else return 0;
            if (v >> 60) return 0;
            v = v << 4 | d;
        }
    } else {
        for (u32 i = 0; i < n; i++) {
            if (s[i] < '0' || s[i] > '9') return 0;
            u64 d = (u64)(s[i] - '0');
            if (v > (~0ULL - d) / 10) return 0;
            v = v * 10 + d;
        }
    }
    *out = v;
    return 1;
}

int parse_size(const char *s, u32 n, u64 *out) {
    u32 shift = 0;
    if (n > 1) {
        switch (s[n - 1]) {
        case 'k': case 'K': shift = 10; break;
        case 'm': case 'M': shift = 20; break;
        case 'g': case 'G': shift = 30; break;
        case 't': case 'T': shift = 40; break;
        default: break;
        }
        if (shift) n--;
    }
    u64 v = 0;
    if (n == 0) return 0;
    for (u32 i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return 0;
    if (!parse_u64(s, n, &v)) return 0;
    if (shift && v > (~0ULL >> shift)) return 0;
    *out = v << shift;
    return 1;
}
