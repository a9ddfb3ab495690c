// When precopy stops sending rounds: the convergence policy, a pure function of what
// the last dirty-log sync showed, so that it can be tested without a guest.
//
//   - postcopy requested (migrate-start-postcopy, --mode postcopy) and allowed
//     (postcopy-ram on both sides): switch to postcopy now;
//   - the dirty rest fits downtime-limit at the measured bandwidth: stop and copy,
//     unless the last round still halved the dirty set (then one more round shrinks
//     what the paused guest waits for), at most max-rounds;
//   - hybrid (postcopy-ram with x-postcopy-auto): from round 2 on, a round that no
//     longer halves the dirty set while the rest does not fit is precopy losing the
//     race: switch to postcopy. Reaching max-rounds also switches;
//   - otherwise max-rounds without fitting fails ("not converging").
#pragma once

#include <cstdint>

namespace ferry {

enum class PrecopyStep { SendRound, StopAndCopy, SwitchToPostcopy, FailNotConverging };
const char* precopy_step_name(PrecopyStep s);

struct RoundFacts {
    uint32_t round = 0;                  // rounds sent so far
    uint64_t dirty_pages = 0;            // what the sync just showed
    uint64_t prev_dirty_pages = UINT64_MAX;  // what the previous sync showed
    double bytes_per_sec = 0;            // measured throughput (0: not yet known)
    uint64_t downtime_limit_ms = 300;
    uint32_t max_rounds = 30;
    bool postcopy_allowed = false;       // postcopy-ram, accepted by the destination
    bool postcopy_auto = false;          // hybrid: switch by itself
    bool postcopy_requested = false;     // migrate-start-postcopy
};

// The expected stop-and-copy time for `pages` at `bytes_per_sec`, in ms (0 when unknown).
double expected_downtime_ms(uint64_t pages, double bytes_per_sec);
PrecopyStep next_precopy_step(const RoundFacts& f);

}  // namespace ferry
