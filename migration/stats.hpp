// What a migration reports (QEMU's query-migrate fields), shared between the
// migration thread (writer) and the monitor (reader) under a lock.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

namespace ferry {

// QEMU's MigrationStatus names.
enum class MigrationStatus { None, Setup, Active, Device, Completed, Failed, Cancelling, Cancelled };
const char* migration_status_name(MigrationStatus s);
bool migration_finished(MigrationStatus s);

struct MigrationParams {
    uint64_t downtime_limit_ms = 300;  // QEMU's default
    uint64_t max_bandwidth = 0;        // bytes/s; 0 = no cap
    uint32_t max_rounds = 30;          // then: not converging
};

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
