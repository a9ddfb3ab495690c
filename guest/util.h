/* util.h — freestanding helpers of the ferry test guest, usable from ring 0 and ring 3:
 * integer types, port I/O, TSC, the serial port (polled 8250 at 0x3f8), a line builder with
 * integer-only formatting, and the command-line value parsers. Nothing here allocates. */
#pragma once

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef int s32;
typedef long long s64;
typedef unsigned long usize;

#define NULL ((void *)0)

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) {
    u8 v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline u64 rdtsc(void) {
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((u64)hi << 32) | lo;
}
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }

/* splitmix64's finaliser: page contents and patterns derive from it. */
static inline u64 mix64(u64 x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

void *memcpy(void *dst, const void *src, usize n);
void *memset(void *dst, int c, usize n);

/* Serial port. serial_init is ring 0 only; the rest works in ring 3 through the TSS I/O
 * bitmap. Lines are written whole under a spinlock so CPUs do not interleave characters. */
void serial_init(void);
void serial_write(const char *s, u32 n);

/* A line under construction: append pieces, then line_emit() adds "\n" and writes it. */
struct line {
    u32 n;
    char buf[376];
};
void line_init(struct line *l);
void line_str(struct line *l, const char *s);
void line_strn(struct line *l, const char *s, u32 n);
void line_u64(struct line *l, u64 v);
void line_hex(struct line *l, u64 v);     /* "0x" + lowercase hex */
void line_fix2(struct line *l, u64 v100); /* v100 / 100 as "X.XX" */
/* Writes the line and "\n". max_spin bounds the wait for the serial lock (0 = forever). */
void line_emit(struct line *l, u64 max_spin);

/* Command-line value parsers over [s, s+n); return 1 on success, 0 on a bad value. */
int parse_u64(const char *s, u32 n, u64 *out);  /* decimal or 0x-hex */
int parse_size(const char *s, u32 n, u64 *out); /* decimal with an optional K/M/G/T suffix */
int str_eq(const char *s, u32 n, const char *lit);
