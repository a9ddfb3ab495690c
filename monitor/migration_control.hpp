// MigrationControl: owns this process's migration (outgoing MigrationSource or
// incoming MigrationDestination), its parameters and capabilities, and carries status
// changes from the migration thread to the main loop (an eventfd), where it emits
// MIGRATION events and tells `ferry run` when to end:
//   - outgoing completed: the guest runs elsewhere; ferry exits 0 (or keeps the
//     paused source with --keep-source);
//   - incoming failed: the guest never ran here; ferry exits 1 with the reason.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/event_loop.hpp"
#include "base/fd.hpp"
#include "migration/destination.hpp"
#include "migration/source.hpp"

namespace ferry {

struct MigrationCapabilities {
    bool events = false;              // MIGRATION events (QEMU's "events" capability)
    bool postcopy_ram = false;        // may switch to postcopy (QEMU's "postcopy-ram")
    bool postcopy_blocktime = false;  // report blocktime (QEMU's; ferry always measures it)
    bool postcopy_auto = false;       // ferry's "x-postcopy-auto": hybrid, switch by itself
    bool postcopy_preempt = false;    // QEMU's "postcopy-preempt": answers on a second connection
};

class MigrationControl {
public:
    using EmitFn = std::function<void(std::string_view name, nlohmann::json data)>;
    // Called on the main loop when this process should end (status, one-line message).
    using FinishFn = std::function<void(int exit_status, std::string message)>;

    static Result<std::unique_ptr<MigrationControl>> create(EventLoop& loop, Machine& machine, bool keep_source, EmitFn emit,
                                                            FinishFn finish);
    ~MigrationControl();

    Result<void> start_outgoing(const std::string& uri);
    // Listens now (returns the bound port: tcp:HOST:0 picks one) and receives in the
    // background.
    Result<uint16_t> start_incoming(const std::string& uri);
    // migrate with "resume": true: a paused outgoing postcopy goes on through `uri`.
    Result<void> resume_outgoing(const std::string& uri);
    // migrate-recover: a paused incoming postcopy listens on `uri` for the source (the port).
    Result<uint16_t> recover_incoming(const std::string& uri);
    // migrate-pause: breaks this side's postcopy connection on purpose (either side).
    Result<void> pause_postcopy();
    // migrate_cancel: cancels an outgoing migration (QEMU cancels only outgoing ones).
    // Refused once it is in postcopy (the guest runs on the destination, which still
    // needs pages from here), except a paused one whose destination never showed that
    // it ran the guest.
    Result<void> cancel_outgoing();
    // The next incoming guest stays paused after it arrived (until QMP cont).
    void set_incoming_paused(bool on) { incoming_paused_ = on; }
    // migrate-start-postcopy (QEMU's errors when postcopy-ram is off or no migration runs).
    Result<void> start_postcopy();
    // The incoming postcopy's fault figures (nullopt: no postcopy here yet).
    std::optional<PostcopyFaultStats> fault_stats() const;

    // The TLS credentials `ferry run` loaded (--tls-creds / --tls-psk), known to QMP as
    // "tls0"; they become the default (tls-creds "tls0"), with `authz` as tls-authz.
    void set_tls_credentials(std::shared_ptr<const TlsCredentials> creds, std::string authz);
    // Whether `id` names loaded credentials ("" names none and is always valid).
    bool tls_creds_known(const std::string& id) const { return id.empty() || (id == kTlsCredsId && tls_creds_); }
    static constexpr const char* kTlsCredsId = "tls0";

    MigrationParams params() const { return params_; }
    void set_params(const MigrationParams& p);
    MigrationCapabilities capabilities() const { return caps_; }
    Result<void> set_capabilities(const MigrationCapabilities& c);

    // The current (or last) migration's figures; status none when there was none.
    MigrationStats stats() const;
    bool outgoing_active() const;
    bool incoming_pending() const { return incoming_ != nullptr && !incoming_done_; }
    // Why a migration owns the machine now (QMP cont, stop and system_reset are refused
    // with this), or nullopt.
    std::optional<std::string> owner() const;

private:
    MigrationControl(EventLoop& loop, Machine& machine, bool keep_source, EmitFn emit, FinishFn finish, Fd event);
    void on_status(MigrationStatus s);  // any thread
    void drain();                       // main loop
    MigrationParams outgoing_params() const;  // params_ with the postcopy capabilities and TLS
    TlsConfig tls_config() const;

    EventLoop& loop_;
    Machine& m_;
    bool keep_source_;
    EmitFn emit_;
    FinishFn finish_;
    Fd event_;
    MigrationParams params_;
    MigrationCapabilities caps_;
    std::shared_ptr<const TlsCredentials> tls_creds_;
    std::unique_ptr<MigrationSource> outgoing_;
    std::unique_ptr<MigrationDestination> incoming_;
    bool incoming_done_ = false;
    bool incoming_paused_ = false;

    std::mutex mu_;
    std::vector<MigrationStatus> pending_;
};

}  // namespace ferry
