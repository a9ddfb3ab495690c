// The receiving side of a live migration: an explicit state machine on one thread
// that owns the reading of the connection. Each phase accepts only its sections:
//
//   setup     header: refuse a guest shaped unlike ours, or a postcopy we cannot
//             serve (no userfaultfd, --prealloc), with an Error; else HeaderAck with
//             the capabilities accepted
//   precopy   ram-batch (received whole, verified, decoded, then placed), sync
//             (-> sync-ack), discard (postcopy only)
//   device    vcpu-state*, vm-state, device-state, state-end: restore into the
//             machine; postcopy: register guest RAM with userfaultfd and start the
//             fault thread (migration/postcopy_incoming.hpp); reply Ready; Go: start
//             the vCPUs, reply Resumed
//   postcopy  ram-batch: placed with UFFDIO_COPY/ZEROPAGE; when every page is here,
//             postcopy-done, unregister, collapse huge pages. When the connection
//             breaks (closed, stalled, a bad checksum, migrate-pause): postcopy-paused;
//             the guest runs on, a vCPU on a missing page waits; migrate-recover
//             listens for the source's resume; the handshake (migration/recovery.hpp)
//             sends the received bitmap; faults waiting are asked again; postcopy
//             goes on
//   complete / failed
//
// A bitmap records every page received. The guest never runs before Go. A failure
// before Go leaves the machine never started; one during postcopy that no recovery
// can mend (the source reported a failure, a protocol violation, a page that cannot
// be placed, cancel) stops the guest (its RAM is incomplete). Either way the owner
// exits with an error.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "memory/userfault.hpp"
#include "migration/boot_stream.hpp"
#include "migration/channel.hpp"
#include "migration/page_set.hpp"
#include "migration/postcopy_incoming.hpp"
#include "migration/stats.hpp"
#include "migration/stream.hpp"
#include "vmm/machine.hpp"

namespace ferry {

class MigrationDestination {
public:
    using StatusFn = std::function<void(MigrationStatus)>;

    // Binds the listening socket now, so the port is open when this returns.
    // start_paused: on Go the guest is left paused (QMP cont starts it).
    static Result<std::unique_ptr<MigrationDestination>> listen(Machine& machine, const TcpAddress& addr, StatusFn on_status,
                                                                bool start_paused = false, MigrationTimeouts timeouts = {},
                                                                TlsConfig tls = {});
    MigrationDestination(const MigrationDestination&) = delete;
    MigrationDestination& operator=(const MigrationDestination&) = delete;
    ~MigrationDestination();

    void start();  // accept and receive on the migration thread
    void cancel();
    MigrationStats stats() const { return stats_.get(); }
    // The postcopy fault figures (nullopt before postcopy began).
    std::optional<PostcopyFaultStats> fault_stats() const;
    uint16_t port() const { return listener_.port(); }
    // migrate-recover: listens on `addr` for the source's recovery connection, while
    // postcopy is paused here (again: the new address replaces the last). The port.
    Result<uint16_t> recover(const TcpAddress& addr);
    // migrate-pause: breaks the postcopy connection(s) on purpose (postcopy-active).
    Result<void> pause_postcopy();

    enum class Phase { Setup, Precopy, Device, Postcopy, Complete, Failed };
    static const char* phase_name(Phase p);

private:
    MigrationDestination(Machine& m, Listener l, StatusFn f, bool paused, MigrationTimeouts t, TlsConfig tls)
        : m_(m), listener_(std::move(l)), on_status_(std::move(f)), start_paused_(paused), timeouts_(t), tls_(std::move(tls)) {}
    // With TLS: the handshake on a connection just accepted; false (logged) when it
    // failed, and the connection is to be dropped unread.
    bool secure(Channel& ch);
    void run();
    Result<void> receive();
    Result<StreamHeader> accept_source();
    Result<void> accept_header(const StreamHeader& theirs);
    Result<void> on_precopy(Section& s);
    Result<void> on_device(Section& s, bool& done);
    Result<void> switch_over();
    Result<void> receive_postcopy();
    // Until every page is here, or a failure (`recoverable`: the connection's).
    Result<void> postcopy_stream(bool& recoverable);
    // Paused until a recovery connection is in and its handshake done, or cancel.
    Result<void> recover_postcopy(const std::string& why);
    Result<Channel> accept_resume();
    void stop_urgent();
    Result<void> place_batch(const Section& s);
    Result<void> accept_urgent_channel(uint64_t token);
    Result<void> place_postcopy_batch(const Section& s, std::vector<DecodedPage>& scratch);
    bool postcopy_complete();
    void urgent_loop();
    Result<void> restore();
    void set_status(MigrationStatus s);

    Machine& m_;
    Listener listener_;
    StatusFn on_status_;
    MigrationStatsBox stats_;
    std::atomic<bool> cancel_{false};
    std::mutex ch_mu_;
    std::unique_ptr<Channel> ch_;
    std::unique_ptr<Channel> urgent_;  // postcopy-preempt: the source's answers (after Go)
    std::thread urgent_thread_;
    std::atomic<bool> urgent_stop_{false};
    std::mutex urgent_mu_;
    struct UrgentError {
        std::string why;
        bool recoverable;  // the connection broke (not a protocol violation)
    };
    std::optional<UrgentError> urgent_error_;
    uint64_t token_ = 0;  // this migration's, from the ack: presented by resume
    std::mutex recover_mu_;
    std::unique_ptr<Listener> recover_listener_;  // from migrate-recover, not yet taken
    std::mutex place_mu_;  // postcopy placement: one connection at a time

    std::vector<std::optional<VcpuState>> vcpus_;
    std::vector<uint64_t> vcpu_saved_at_ns_;
    std::optional<VmState> vm_;
    std::vector<DeviceRecord> devices_;  // one per device-state section
    bool start_paused_ = false;
    MigrationTimeouts timeouts_;
    TlsConfig tls_;
    std::atomic<bool> started_{false};  // the guest's vCPUs were started here
    Phase phase_ = Phase::Setup;
    bool postcopy_ = false;                 // accepted in the header
    std::optional<Userfault> uffd_;         // opened at the header, used at the switch
    PageIndex index_;
    std::unique_ptr<AtomicBitmap> received_;
    BootAssembler boot_{0, 0};  // sized once the header is in
    DirectPlacer direct_;
    std::vector<DecodedPage> scratch_;
    mutable std::mutex pc_mu_;              // guards postcopy_ (the pointer) for fault_stats()
    std::unique_ptr<PostcopyIncoming> postcopy_in_;
    std::chrono::steady_clock::time_point start_;
    std::thread thread_;
};

}  // namespace ferry
