/* workload.c — the ring-3 workload of the ferry test guest (DESIGN.md §4). Runs natively on
 * every CPU; only the serial port and port 0xf4 are reachable (TSS I/O bitmap).
 *
 * Startup: APs check in (the BSP closes the door after cpus=N arrived, 2 s at most, or after
 * ~100 ms), each CPU populates its share [lo, hi) of the working set, the BSP prints
 * "guest: ready" when all are done, and every CPU enters the time loop:
 *
 *   loop: one step of work (512 bytes: a rewrite chunk, a verify chunk, 64 random reads,
 *         or a pause), then read the TSC; the gap since the previous read feeds this CPU's
 *         per-epoch maximum and its >16 us histogram; the BSP prints a tick each second.
 *
 * Page content: word w of page i at generation gen is page_base(i, gen) ^ (w * K_WORD), and
 * gen[i] (in guest RAM, after the working set) is the generation last written. A rewrite
 * writes the page's 8 chunks (one per loop step) and then publishes gen[i] + 1; verify steps
 * never run while a rewrite is half done, so a page always matches gen[i] between steps.
 * Statistics are cumulative per CPU (struct pcpu); the BSP prints per-second differences.
 * All of this state lives in guest RAM, so after a migration the counting goes on.
 */
#include "guest.h"

#define K_WORD 0x9e3779b97f4a7c15ULL
#define MASK40 ((1ULL << 40) - 1)
#define CORRUPT_LINES_PER_TICK 20

struct shared g;

/* BSP-only bookkeeping for per-second differences. */
static u64 snap_dirtied[MAX_CPUS], snap_stalls[MAX_CPUS][NBUCKETS], snap_acc[MAX_CPUS], snap_acyc[MAX_CPUS];
static u64 next_tick;
static volatile u64 sink;

static inline u64 page_base(u64 page, u32 gen, u64 sm) { return mix64(mix64(page ^ sm) + gen); }

static inline void write_chunk(u64 *p, u64 base, u64 w0) {
    for (u32 i = 0; i < CHUNK_WORDS; i++) p[i] = base ^ ((w0 + i) * K_WORD);
}

static inline int check_chunk(const volatile u64 *p, u64 base, u64 w0) {
    u64 d = 0;
    for (u32 i = 0; i < CHUNK_WORDS; i++) d |= p[i] ^ (base ^ ((w0 + i) * K_WORD));
    return d != 0;
}

static void write_page(u64 page, u64 base) {
    u64 *p = (u64 *)(g.ws + page * PAGE_SIZE);
    for (u32 c = 0; c < CHUNKS_PER_PAGE; c++) write_chunk(p + c * CHUNK_WORDS, base, c * CHUNK_WORDS);
}

static __attribute__((noreturn)) void sys_poweroff(u32 code) {
    __asm__ volatile("int %0" : : "i"(VEC_POWEROFF), "D"(code) : "memory");
    for (;;) cpu_relax();
}

static __attribute__((noreturn)) void sys_park(void) {
    __asm__ volatile("int %0" : : "i"(VEC_PARK) : "memory");
    for (;;) cpu_relax();
}

static void say(const char *s) {
    struct line l;
    line_init(&l);
    line_str(&l, s);
    line_emit(&l, 0);
}

static u64 page_gpa(u64 page) {
    u64 voff = page * PAGE_SIZE;
    for (u32 i = 0; i < g.nruns; i++)
        if (voff - g.runs[i].voff < g.runs[i].len) return g.runs[i].gpa + (voff - g.runs[i].voff);
    return ~0ULL;
}

static void corrupt_page(struct pcpu *pc, u64 page, u32 gv, u64 sm) {
    pc->corrupt++;
    if (__atomic_sub_fetch(&g.corrupt_budget, 1, __ATOMIC_RELAXED) >= 0) {
        struct line l;
        line_init(&l);
        line_str(&l, "guest: CORRUPT gpa=");
        line_hex(&l, page_gpa(page));
        line_emit(&l, 0);
    }
    /* Repair it, so a page counts once per corruption event rather than on every pass. */
    write_page(page, page_base(page, gv + 1, sm));
    g.gen[page] = gv + 1;
}

static void record_stall(struct pcpu *pc, u64 gap, u64 khz) {
    if (gap > 1ULL << 50) gap = 1ULL << 50;
    u64 us = gap * 1000 / khz;
    int b = us >= 16 ? 63 - __builtin_clzll(us) - 4 : 0;
    if (b >= NBUCKETS) b = NBUCKETS - 1;
    pc->stalls[b]++;
}

static void do_tick(u64 now, u64 hz) {
    u64 e = g.epoch;
    __atomic_store_n(&g.epoch, e + 1, __ATOMIC_SEQ_CST);
    /* Let CPUs that read the old epoch just before finish their step. */
    for (u64 t = rdtsc() + hz / 50000; (s64)(rdtsc() - t) < 0;) cpu_relax();

    u64 dirtied = 0, maxgap = 0, corrupt = 0, acc = 0, acyc = 0, stalls[NBUCKETS], any = 0;
    for (u32 b = 0; b < NBUCKETS; b++) stalls[b] = 0;
    for (u32 i = 0; i < g.ncpus; i++) {
        struct pcpu *pc = &g.pcpu[i];
        u64 v = pc->dirtied;
        dirtied += v - snap_dirtied[i];
        snap_dirtied[i] = v;
        v = pc->maxslot;
        if ((v >> 40) == (e & 0xffffff) && (v & MASK40) > maxgap) maxgap = v & MASK40;
        corrupt += pc->corrupt;
        for (u32 b = 0; b < NBUCKETS; b++) {
            v = pc->stalls[b];
            stalls[b] += v - snap_stalls[i][b];
            any |= v - snap_stalls[i][b];
            snap_stalls[i][b] = v;
        }
        v = pc->accesses;
        acc += v - snap_acc[i];
        snap_acc[i] = v;
        v = pc->access_cycles;
        acyc += v - snap_acyc[i];
        snap_acyc[i] = v;
    }

    struct line l;
    line_init(&l);
    line_str(&l, "guest: tick=");
    line_u64(&l, e + 1);
    line_str(&l, " dirtied=");
    line_u64(&l, dirtied);
    line_str(&l, " max_stall_us=");
    line_u64(&l, maxgap * 1000 / g.tsc_khz);
    line_str(&l, " corrupt=");
    line_u64(&l, corrupt);
    line_emit(&l, 0);
    if (any) {
        line_init(&l);
        line_str(&l, "guest: stalls");
        for (u32 b = 0; b < NBUCKETS; b++) {
            line_str(&l, " ");
            line_u64(&l, 16ULL << b);
            line_str(&l, ":");
            line_u64(&l, stalls[b]);
        }
        line_emit(&l, 0);
    }
    if (g.cfg.mode == MODE_TLB && acc) {
        u64 ns = acyc * 1000000 / g.tsc_khz;
        line_init(&l);
        line_str(&l, "guest: tlb ns_per_access=");
        line_fix2(&l, ns * 100 / acc);
        line_emit(&l, 0);
    }
    if (g.cfg.mode == MODE_BLK) blk_tick(now);
    if (g.cfg.mode == MODE_NET) net_tick();
    g.corrupt_budget = CORRUPT_LINES_PER_TICK;
    if (g.cfg.ticks && e + 1 >= g.cfg.ticks) {
        say("guest: done");
        g.halt = 1;
        sys_poweroff(0);
    }
    next_tick += hz;
    if ((s64)(now - next_tick) >= 0) next_tick = now + hz; /* overdue (stopped VM): no burst */
}

static __attribute__((noreturn)) void run(u32 me, int bsp) {
    const u32 mode = g.cfg.mode;
    const u64 khz = g.tsc_khz, hz = khz * 1000, thr16 = khz * 16 / 1000;
    const u64 n = g.ncpus, np = g.npages, lo = np * me / n, hi = np * (me + 1) / n;
    const u64 sm = mix64(g.cfg.seed ^ 0x6a09e667f3bcc908ULL);
    struct pcpu *pc = &g.pcpu[me];
    u8 *const ws = g.ws;
    u32 *const gen = g.gen;

    if (mode == MODE_KSM) {
        for (u64 p = lo; p < hi; p++) write_page(p, mix64(sm ^ 0x4b534d));
    } else if (mode != MODE_IDLE) {
        for (u64 p = lo; p < hi; p++) {
            write_page(p, page_base(p, 0, sm));
            gen[p] = 0;
        }
    }
    if (mode == MODE_BLK && bsp) blk_init();
    if (mode == MODE_NET && bsp) net_init();
    __atomic_add_fetch(&g.populated, 1, __ATOMIC_SEQ_CST);
    if (bsp) {
        while (g.populated < n) cpu_relax();
        say("guest: ready");
        g.start_tsc = rdtsc();
        next_tick = g.start_tsc + hz;
        __atomic_store_n(&g.started, 1, __ATOMIC_SEQ_CST);
    } else {
        while (!g.started) cpu_relax();
    }

    /* Rewrite pacing: this CPU's share of rate, spread evenly (Bresenham on the TSC). */
    const u64 rate_pages = (g.cfg.rate + PAGE_SIZE - 1) / PAGE_SIZE;
    const u64 my_rate = rate_pages / n + (me < rate_pages % n);
    const int rate_max = g.cfg.rate_max;
    const int rewrites = (mode == MODE_DIRTY || mode == MODE_VERIFY) && hi > lo && (rate_max || my_rate);
    const u64 q = my_rate ? hz / my_rate : 0, r = my_rate ? hz % my_rate : 0, backlog = hz / 10;
    u64 next_due = g.start_tsc, frac = 0;

    int rw_active = 0, verify_turn = 0, inject = 0;
    u32 rw_chunk = 0, rw_gen = 0;
    u64 rw_page = lo, rw_cursor = lo, rw_base = 0, vf_page = lo;
    u32 vf_chunk = 0;
    const u64 nwords = np * PAGE_WORDS;
    u64 xs = mix64(g.cfg.seed + me + 1) | 1;

    u64 last = rdtsc(), my_epoch = g.epoch, my_max = 0;
    for (;;) {
        int tlb_step = 0;
        if (rw_active) {
            write_chunk((u64 *)(ws + rw_page * PAGE_SIZE) + rw_chunk * CHUNK_WORDS, rw_base, rw_chunk * CHUNK_WORDS);
            if (++rw_chunk == CHUNKS_PER_PAGE) {
                gen[rw_page] = rw_gen;
                rw_active = 0;
                verify_turn = 1;
                pc->dirtied++;
            }
        } else if (rewrites && (rate_max ? (mode != MODE_VERIFY || !verify_turn) : (s64)(last - next_due) >= 0)) {
            if (!rate_max) {
                next_due += q;
                frac += r;
                if (frac >= my_rate) frac -= my_rate, next_due++;
                if ((s64)(last - next_due) > (s64)backlog) next_due = last - backlog;
            }
            rw_page = rw_cursor;
            if (++rw_cursor == hi) rw_cursor = lo;
            rw_gen = gen[rw_page] + 1;
            rw_base = page_base(rw_page, rw_gen, sm);
            rw_chunk = 0;
            rw_active = 1;
            continue; /* first chunk right away; the TSC is read after it */
        } else if (mode == MODE_VERIFY && hi > lo) {
            u32 gv = gen[vf_page];
            int bad = check_chunk((const volatile u64 *)(ws + vf_page * PAGE_SIZE) + vf_chunk * CHUNK_WORDS,
                                  page_base(vf_page, gv, sm), vf_chunk * CHUNK_WORDS);
            if (bad || ++vf_chunk == CHUNKS_PER_PAGE) {
                if (bad) {
                    corrupt_page(pc, vf_page, gv, sm);
                    last = rdtsc(); /* printing is not a stall */
                }
                vf_chunk = 0;
                verify_turn = 0;
                if (++vf_page == hi) vf_page = lo;
            }
        } else if (mode == MODE_TLB) {
            u64 sum = 0;
            for (u32 i = 0; i < 64; i++) {
                xs ^= xs << 13;
                xs ^= xs >> 7;
                xs ^= xs << 17;
                sum += ((const volatile u64 *)ws)[(u64)(((unsigned __int128)xs * nwords) >> 64)];
            }
            sink = sum;
            pc->accesses += 64;
            tlb_step = 1;
        } else if (mode == MODE_BLK && bsp) {
            blk_step();
        } else if (mode == MODE_NET && bsp) {
            net_step();
        } else {
            cpu_relax();
        }

        u64 now = rdtsc(), gap = now - last;
        if ((s64)gap < 0) { /* TSC went backwards (restored clock): not a stall */
            if (bsp) next_tick -= last - now;
            next_due -= last - now;
            gap = 0;
        }
        last = now;
        if (tlb_step) pc->access_cycles += gap;
        u64 e = g.epoch;
        if (e != my_epoch) my_epoch = e, my_max = 0;
        if (gap > my_max) {
            my_max = gap;
            pc->maxslot = (e & 0xffffff) << 40 | (gap > MASK40 ? MASK40 : gap);
        }
        if (gap > thr16) record_stall(pc, gap, khz);
        if (bsp && (s64)(now - next_tick) >= 0) {
            do_tick(now, hz);
            last = rdtsc();
            if (g.cfg.inject && g.epoch == g.cfg.inject) inject = 1;
        }
        if (inject && mode == MODE_VERIFY && hi > lo && !(rw_active && rw_page == vf_page)) {
            /* Self-test (inject_corrupt=N): the next verify step must report this page. */
            ((volatile u64 *)(ws + vf_page * PAGE_SIZE))[vf_chunk * CHUNK_WORDS] ^= 1;
            inject = 0;
        }
        if (g.halt) sys_park();
    }
}

void bsp_user_main(u64 unused) {
    (void)unused;
    const u64 hz = g.tsc_khz * 1000;
    if (g.cfg.cpus != 1) {
        const u64 t0 = rdtsc(), limit = g.cfg.cpus ? 2 * hz : hz / 10;
        while (rdtsc() - t0 < limit && !(g.cfg.cpus && g.arrived + 1 >= g.cfg.cpus)) cpu_relax();
    }
    const u32 aps = __atomic_fetch_or(&g.arrived, CLOSED, __ATOMIC_SEQ_CST);
    g.ncpus = aps + 1;
    struct line l;
    line_init(&l);
    line_str(&l, "guest: cpus=");
    line_u64(&l, g.ncpus);
    line_emit(&l, 0);
    g.corrupt_budget = CORRUPT_LINES_PER_TICK;
    __atomic_store_n(&g.go, 1, __ATOMIC_SEQ_CST);
    run(0, 1);
}

void ap_user_main(u64 unused) {
    (void)unused;
    u32 v = __atomic_load_n(&g.arrived, __ATOMIC_SEQ_CST);
    do {
        if (v & CLOSED) sys_park(); /* too late: the BSP already counted the CPUs */
    } while (!__atomic_compare_exchange_n(&g.arrived, &v, v + 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    while (!g.go) cpu_relax();
    run(v + 1, 0);
}
