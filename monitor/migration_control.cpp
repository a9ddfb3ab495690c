#include "monitor/migration_control.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <fmt/format.h>

#include "monitor/migration_commands.hpp"

namespace ferry {

Result<std::unique_ptr<MigrationControl>> MigrationControl::create(EventLoop& loop, Machine& machine, bool keep_source,
                                                                   EmitFn emit, FinishFn finish) {
    Fd ev(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!ev.valid()) return fail_errno(Domain::Migration, "eventfd");
    std::unique_ptr<MigrationControl> c(
        new MigrationControl(loop, machine, keep_source, std::move(emit), std::move(finish), std::move(ev)));
    if (auto ok = loop.watch(c->event_.get(), EPOLLIN, [raw = c.get()](uint32_t) { raw->drain(); }); !ok)
        return std::unexpected(ok.error());
    return c;
}

MigrationControl::MigrationControl(EventLoop& loop, Machine& machine, bool keep_source, EmitFn emit, FinishFn finish, Fd event)
    : loop_(loop), m_(machine), keep_source_(keep_source), emit_(std::move(emit)), finish_(std::move(finish)), event_(std::move(event)) {}

MigrationControl::~MigrationControl() {
    loop_.unwatch(event_.get());
    outgoing_.reset();  // cancels and joins
    incoming_.reset();
}

void MigrationControl::on_status(MigrationStatus s) {
    {
        std::lock_guard lock(mu_);
        pending_.push_back(s);
    }
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(event_.get(), &one, sizeof(one));
}

void MigrationControl::drain() {
    uint64_t v;
    [[maybe_unused]] ssize_t n = ::read(event_.get(), &v, sizeof(v));
    std::vector<MigrationStatus> todo;
    {
        std::lock_guard lock(mu_);
        todo.swap(pending_);
    }
    for (MigrationStatus s : todo) {
        if (caps_.events && emit_) emit_("MIGRATION", nlohmann::json{{"status", migration_status_name(s)}});
        // The final figures, for clients such as `ferry migrate` that may lose the
        // socket right after (the source exits once the guest runs elsewhere).
        if (outgoing_ && migration_finished(s) && emit_) emit_("FERRY_MIGRATION_DONE", query_migrate_json(outgoing_->stats()));
        if (outgoing_ && s == MigrationStatus::Completed) {
            auto st = outgoing_->stats();
            std::string msg = fmt::format("migration completed: {} MiB in {} ms, downtime {} ms", st.ram_transferred >> 20,
                                          st.total_time_ms, st.downtime_ms.value_or(0));
            if (!keep_source_) finish_(0, msg + "; the guest runs on the destination, exiting");
        }
        if (incoming_ && !incoming_done_ && migration_finished(s)) {
            incoming_done_ = true;
            if (s != MigrationStatus::Completed) finish_(1, "incoming migration failed: " + incoming_->stats().error);
        }
    }
}

Result<void> MigrationControl::start_outgoing(const std::string& uri) {
    if (outgoing_active()) return fail(Domain::Migration, "There's a migration process in progress");
    if (incoming_ && !incoming_done_) return fail(Domain::Migration, "Guest is waiting for an incoming migration");
    RunState rs = m_.run_state();
    if (rs != RunState::Running && rs != RunState::Paused)
        return fail(Domain::Migration, fmt::format("cannot migrate a guest in state {}", run_state_name(rs)));
    auto addr = parse_tcp_address(uri);
    if (!addr) return std::unexpected(addr.error());
    if (auto tls = tls_config(); tls.creds && !tls.creds->can_connect())
        return fail(Domain::Migration, fmt::format("the TLS credentials ({}) have no client certificate (client-cert.pem, "
                                                   "client-key.pem): this ferry cannot send a migration with them",
                                                   tls.creds->describe()));
    outgoing_.reset();
    outgoing_ = std::make_unique<MigrationSource>(m_, *addr, outgoing_params(), [this](MigrationStatus s) { on_status(s); });
    outgoing_->start();
    return {};
}

Result<uint16_t> MigrationControl::start_incoming(const std::string& uri) {
    if (incoming_) return fail(Domain::Migration, "an incoming migration was already started");
    if (m_.run_state() != RunState::InMigrate)
        return fail(Domain::Migration, "'-incoming' was not specified on the command line");
    auto addr = parse_tcp_address(uri);
    if (!addr) return std::unexpected(addr.error());
    auto dest = MigrationDestination::listen(m_, *addr, [this](MigrationStatus s) { on_status(s); }, incoming_paused_, params_.timeouts,
                                             tls_config());
    if (!dest) return std::unexpected(dest.error());
    incoming_ = std::move(*dest);
    incoming_->start();
    return incoming_->port();
}

Result<void> MigrationControl::resume_outgoing(const std::string& uri) {
    if (!outgoing_) return fail(Domain::Migration, "no outgoing migration to resume");
    auto addr = parse_tcp_address(uri);
    if (!addr) return std::unexpected(addr.error());
    return outgoing_->resume(*addr);
}

Result<uint16_t> MigrationControl::recover_incoming(const std::string& uri) {
    if (!incoming_) return fail(Domain::Migration, "no incoming migration to recover");
    auto addr = parse_tcp_address(uri);
    if (!addr) return std::unexpected(addr.error());
    return incoming_->recover(*addr);
}

Result<void> MigrationControl::pause_postcopy() {
    if (outgoing_active()) return outgoing_->pause_postcopy();
    if (incoming_ && !incoming_done_) return incoming_->pause_postcopy();
    return fail(Domain::Migration, "migrate-pause: no postcopy migration runs here");
}

Result<void> MigrationControl::cancel_outgoing() {
    if (!outgoing_) return {};
    auto st = outgoing_->stats().status;
    // A paused postcopy may be given up only while nothing shows that the destination
    // ever ran the guest (then it stays paused here, intact, for cont).
    bool given_up = st == MigrationStatus::PostcopyPaused && !outgoing_->destination_runs();
    if (!given_up && (st == MigrationStatus::PostcopyActive || st == MigrationStatus::PostcopyPaused || st == MigrationStatus::PostcopyRecover))
        return fail(Domain::Migration, "the guest runs on the destination, which still needs pages from here: a postcopy "
                                       "migration cannot be cancelled (if its connection breaks it pauses, and migrate-recover "
                                       "with migrate resume mend it; quitting this ferry loses the guest)");
    outgoing_->cancel();
    return {};
}

Result<void> MigrationControl::start_postcopy() {
    if (!outgoing_active()) return fail(Domain::Migration, "Postcopy must be started after migration has been started");
    if (!caps_.postcopy_ram) return fail(Domain::Migration, "Enable postcopy with migrate_set_capability before the start of migration");
    outgoing_->start_postcopy();
    return {};
}

std::optional<std::string> MigrationControl::owner() const {
    if (outgoing_active())
        return std::string("A migration is in progress: the guest's run state belongs to it until it ends (migrate_cancel to end it)");
    auto in = incoming_ ? incoming_->stats().status : MigrationStatus::None;
    if (in != MigrationStatus::None && in != MigrationStatus::Setup && !migration_finished(in))
        return std::string("An incoming migration is in progress: the guest's run state belongs to it until every page is here");
    return std::nullopt;
}

std::optional<PostcopyFaultStats> MigrationControl::fault_stats() const {
    if (!incoming_) return std::nullopt;
    return incoming_->fault_stats();
}

void MigrationControl::set_params(const MigrationParams& p) {
    params_ = p;
    if (outgoing_) outgoing_->set_params(outgoing_params());
}

void MigrationControl::set_tls_credentials(std::shared_ptr<const TlsCredentials> creds, std::string authz) {
    tls_creds_ = std::move(creds);
    params_.tls_creds = tls_creds_ ? kTlsCredsId : "";
    params_.tls_authz = std::move(authz);
}

TlsConfig MigrationControl::tls_config() const {
    if (params_.tls_creds.empty() || !tls_creds_) return {};
    return {tls_creds_, params_.tls_authz};
}

MigrationParams MigrationControl::outgoing_params() const {
    MigrationParams p = params_;
    p.tls = tls_config();
    p.postcopy = caps_.postcopy_ram;
    p.postcopy_auto = caps_.postcopy_ram && caps_.postcopy_auto;
    p.postcopy_preempt = caps_.postcopy_ram && caps_.postcopy_preempt;
    return p;
}

Result<void> MigrationControl::set_capabilities(const MigrationCapabilities& c) {
    if (outgoing_active()) return fail(Domain::Migration, "There's a migration process in progress");
    caps_ = c;
    return {};
}

MigrationStats MigrationControl::stats() const {
    if (outgoing_) return outgoing_->stats();
    if (incoming_) return incoming_->stats();
    return MigrationStats{};
}

bool MigrationControl::outgoing_active() const {
    return outgoing_ && !migration_finished(outgoing_->stats().status);
}

}  // namespace ferry
