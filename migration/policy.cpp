#include "migration/policy.hpp"

namespace ferry {

const char* precopy_step_name(PrecopyStep s) {
    switch (s) {
        case PrecopyStep::SendRound: return "send-round";
        case PrecopyStep::StopAndCopy: return "stop-and-copy";
        case PrecopyStep::SwitchToPostcopy: return "switch-to-postcopy";
        case PrecopyStep::FailNotConverging: return "fail-not-converging";
    }
    return "?";
}

double expected_downtime_ms(uint64_t pages, double bytes_per_sec) {
    if (bytes_per_sec <= 0) return 0;
    return static_cast<double>(pages) * 4096.0 * 1000.0 / bytes_per_sec;
}

PrecopyStep next_precopy_step(const RoundFacts& f) {
    if (f.postcopy_allowed && f.postcopy_requested) return PrecopyStep::SwitchToPostcopy;
    double expected = expected_downtime_ms(f.dirty_pages, f.bytes_per_sec);
    bool fits = f.dirty_pages == 0 || (f.bytes_per_sec > 0 && expected <= static_cast<double>(f.downtime_limit_ms));
    bool shrinking = f.prev_dirty_pages == UINT64_MAX || f.dirty_pages * 2 < f.prev_dirty_pages;
    if (f.round > 0 && fits) {
        if (f.dirty_pages == 0 || !shrinking || expected < 1.0 || f.round >= f.max_rounds) return PrecopyStep::StopAndCopy;
        return PrecopyStep::SendRound;
    }
    bool hybrid = f.postcopy_allowed && f.postcopy_auto;
    if (hybrid && f.round >= 2 && !fits && !shrinking) return PrecopyStep::SwitchToPostcopy;
    if (f.round >= f.max_rounds) return hybrid ? PrecopyStep::SwitchToPostcopy : PrecopyStep::FailNotConverging;
    return PrecopyStep::SendRound;
}

}  // namespace ferry
