// What a migration reports (QEMU's query-migrate fields), shared between the
// migration thread (writer) and the monitor (reader) under a lock.
#pragma once

#include <chrono>

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "migration/tls.hpp"

namespace ferry {

// QEMU's MigrationStatus names. postcopy-paused: a postcopy connection broke, both
// sides wait for a recovery; postcopy-recover: a recovery connection is being set up.
enum class MigrationStatus {
    None, Setup, Active, Device, PostcopyActive, PostcopyPaused, PostcopyRecover, Completed, Failed, Cancelling, Cancelled
};
const char* migration_status_name(MigrationStatus s);
bool migration_finished(MigrationStatus s);

// Bounds on each phase's waits (QMP migrate-set-parameters x-setup-timeout,
// x-stall-timeout, x-switchover-timeout, in ms; docs/migration-protocol.md).
struct MigrationTimeouts {
    std::chrono::milliseconds setup{10000};       // connect, header and its ack
    std::chrono::milliseconds stall{60000};       // a send or receive that makes no progress
    std::chrono::milliseconds switchover{30000};  // each of ready, go and resumed
};

struct MigrationParams {
    uint64_t downtime_limit_ms = 300;  // QEMU's default
    uint64_t max_bandwidth = 0;        // bytes/s; 0 = no cap
    uint64_t max_postcopy_bandwidth = 0;  // bytes/s after the switch to postcopy; 0 = no cap (QEMU's default)
    uint32_t max_rounds = 30;          // then: not converging (hybrid: switch to postcopy)
    // From the capabilities when the migration starts (outgoing only).
    bool postcopy = false;       // postcopy-ram: may switch to postcopy
    bool postcopy_auto = false;  // x-postcopy-auto: switch by itself when precopy does not converge
    bool postcopy_preempt = false;  // postcopy-preempt: page answers on a second connection
    MigrationTimeouts timeouts;
    // TLS (migration/tls.hpp): QMP's tls-creds (the id of the credentials ferry run
    // loaded, "tls0"; "" for none) and tls-authz (the client a destination lets in).
    std::string tls_creds, tls_authz;
    TlsConfig tls;  // what they resolve to when a migration starts (creds null: plain TCP)
};

// One userfault on the postcopy destination: when (since postcopy began), where, and
// how long until its page was placed.
struct FaultSample {
    uint64_t at_us;
    uint64_t gpa;
    uint32_t latency_us;
};
// The postcopy destination's fault figures (QEMU's postcopy-blocktime family, and
// ferry-query-migrate-latency).
struct PostcopyFaultStats {
    uint64_t faults = 0;         // fault events read from the userfaultfd
    uint64_t requests = 0;       // pages asked of the source
    uint64_t local_zero = 0;     // faults on pages known to be zero, served without asking
    uint64_t blocktime_ms = 0;   // time during which every vCPU waited on a fault
    std::vector<uint64_t> vcpu_blocktime_ms;
    std::vector<uint32_t> latencies_us;  // fault -> page placed, one per faulted page
    std::vector<FaultSample> series;     // the first kMaxFaultSeries of them, in order
    std::optional<uint64_t> thp_before_bytes, thp_after_bytes;  // around MADV_COLLAPSE
};
inline constexpr size_t kMaxFaultSeries = 100000;

struct MigrationStats {
    MigrationStatus status = MigrationStatus::None;
    std::string error;          // why it failed
    uint64_t total_time_ms = 0; // so far, or in all
    uint64_t setup_time_ms = 0;
    std::optional<uint64_t> downtime_ms;       // measured: source pause -> destination resume
    std::optional<uint64_t> expected_downtime_ms;
    uint64_t ram_total = 0;       // bytes of guest RAM
    uint64_t ram_transferred = 0; // bytes put on the wire
    uint64_t ram_remaining = 0;   // dirty bytes not yet sent
    uint64_t ram_duplicate = 0;   // zero pages (sent as flags)
    uint64_t ram_normal = 0;      // pages sent with data
    uint64_t ram_normal_bytes = 0;
    uint64_t ram_skipped = 0;     // never-touched pages not sent at all
    uint64_t dirty_sync_count = 0;// dirty-log syncs (rounds)
    double mbps = 0;              // last round's throughput, megabits per second
    uint64_t dirty_pages_rate = 0;// pages dirtied per second in the last round
    uint64_t postcopy_requests = 0;  // pages the destination asked for (source: answered)
    bool postcopy_switched = false;  // the migration went to postcopy
    uint32_t postcopy_pauses = 0;    // times its postcopy connection broke (each recovered, or the last not)
    std::string pause_reason;        // why it paused last
};

class MigrationStatsBox {
public:
    MigrationStats get() const {
        std::lock_guard lock(mu_);
        return s_;
    }
    template <class F>
    void update(F&& f) {
        std::lock_guard lock(mu_);
        f(s_);
    }

private:
    mutable std::mutex mu_;
    MigrationStats s_;
};

}  // namespace ferry
