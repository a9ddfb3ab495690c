// The sending side of a live migration (precopy). One thread owns the connection:
//
//   setup:   connect, send the header, wait for the destination's HeaderAck
//   active:  round 0 sends every page the host ever backed that is not zero; then
//            rounds of pages from the dirty log, each chunk's bits cleared just before
//            its pages are read, until the dirty rest fits downtime-limit at the
//            measured bandwidth (or max_rounds: failed, not converging)
//   device:  pause the vCPUs, send the last dirty pages, vCPU/VM/device state,
//            StateEnd; wait for Ready; send Go; wait for Resumed
//   completed: the source stays paused (its owner exits or keeps it, --keep-source)
//
// Any failure before Go (connection lost, destination refused or died, cancel) leaves
// the source running as it was: vCPUs resumed, dirty logging off, status failed or
// cancelled with the reason.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "migration/channel.hpp"
#include "migration/dirty.hpp"
#include "migration/stats.hpp"
#include "vmm/machine.hpp"

namespace ferry {

class MigrationSource {
public:
    // Called on the migration thread at every status change.
    using StatusFn = std::function<void(MigrationStatus)>;

    MigrationSource(Machine& machine, TcpAddress to, MigrationParams params, StatusFn on_status);
    MigrationSource(const MigrationSource&) = delete;
    MigrationSource& operator=(const MigrationSource&) = delete;
    ~MigrationSource();  // cancels if still running, joins

    void start();
    void cancel();
    MigrationStats stats() const { return stats_.get(); }
    void set_params(const MigrationParams& p);

private:
    using Clock = std::chrono::steady_clock;
    void run();
    Result<void> migrate();
    Result<void> send_round(std::vector<std::vector<uint64_t>>& dirty, bool first, bool paused);
    Result<void> flush_batch();
    Result<void> sync_with_destination(uint32_t round);
    Result<void> send_state();
    void set_status(MigrationStatus s);
    void throttle();
    bool cancelled() const { return cancel_.load(); }

    Machine& m_;
    TcpAddress to_;
    mutable std::mutex params_mu_;
    MigrationParams params_;
    StatusFn on_status_;
    MigrationStatsBox stats_;
    std::atomic<bool> cancel_{false};
    bool we_paused_ = false;  // resume on failure only a guest this migration paused

    std::mutex ch_mu_;  // guards ch_ for cancel()
    std::unique_ptr<Channel> ch_;
    std::unique_ptr<DirtyTracker> dirty_;

    // The RAM batch being filled.
    std::vector<uint64_t> batch_entries_;
    std::vector<uint8_t> batch_data_;
    uint32_t batch_data_pages_ = 0;
    uint64_t pending_skipped_ = 0, pending_duplicate_ = 0;  // added to stats_ per batch
    uint64_t round_bytes_ = 0;
    Clock::time_point round_start_;
    Clock::time_point start_;
    std::thread thread_;
};

}  // namespace ferry
