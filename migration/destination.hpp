// The receiving side of a live migration. Its state machine, on one thread that
// owns the connection:
//
//   listening -> (accept) -> header: refuse a guest shaped unlike ours (reply Error),
//   else HeaderAck -> receiving: RamBatch* (each validated whole before any page is
//   written), VcpuState*, VmState, DeviceState -> StateEnd: restore into the machine,
//   reply Ready -> Go: start the vCPUs, reply Resumed -> completed.
//
// The guest never runs before Go. Any failure ends in `failed` with the reason and
// the machine never started: its owner exits with an error.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "migration/channel.hpp"
#include "migration/stats.hpp"
#include "vmm/machine.hpp"

namespace ferry {

class MigrationDestination {
public:
    using StatusFn = std::function<void(MigrationStatus)>;

    // Binds the listening socket now, so the port is open when this returns.
    static Result<std::unique_ptr<MigrationDestination>> listen(Machine& machine, const TcpAddress& addr, StatusFn on_status);
    MigrationDestination(const MigrationDestination&) = delete;
    MigrationDestination& operator=(const MigrationDestination&) = delete;
    ~MigrationDestination();

    void start();  // accept and receive on the migration thread
    void cancel();
    MigrationStats stats() const { return stats_.get(); }
    uint16_t port() const { return listener_.port(); }

private:
    MigrationDestination(Machine& m, Listener l, StatusFn f) : m_(m), listener_(std::move(l)), on_status_(std::move(f)) {}
    void run();
    Result<void> receive();
    Result<void> restore();
    void set_status(MigrationStatus s);

    Machine& m_;
    Listener listener_;
    StatusFn on_status_;
    MigrationStatsBox stats_;
    std::atomic<bool> cancel_{false};
    std::mutex ch_mu_;
    std::unique_ptr<Channel> ch_;

    std::vector<std::optional<VcpuState>> vcpus_;
    std::vector<uint64_t> vcpu_saved_at_ns_;
    std::optional<VmState> vm_;
    std::vector<uint8_t> devices_;
    std::chrono::steady_clock::time_point start_;
    std::thread thread_;
};

}  // namespace ferry
