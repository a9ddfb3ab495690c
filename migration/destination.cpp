#include "migration/destination.hpp"
#include "base/seccomp.hpp"

#include <sys/random.h>
#include <time.h>

#include <cstdlib>
#include <cstring>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "base/log.hpp"
#include "base/state_io.hpp"
#include "migration/recovery.hpp"
#include "migration/stream.hpp"

namespace ferry {

namespace {
uint64_t realtime_ns() {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}
constexpr uint64_t kMaxTscCatchUpNs = 3600ull * 1000000000ull;
constexpr uint32_t kPostcopyReceiveBuffer = 256 * 1024;
// An answered page waits behind whatever background data sits unread here: keep that
// little (FERRY_POSTCOPY_RCVBUF, bytes, for experiments).
uint32_t postcopy_receive_buffer() {
    const char* env = std::getenv("FERRY_POSTCOPY_RCVBUF");
    return env ? static_cast<uint32_t>(std::strtoul(env, nullptr, 10)) : kPostcopyReceiveBuffer;
}
constexpr auto kUrgentChannelWait = std::chrono::seconds(10);
constexpr auto kHeaderWait = std::chrono::seconds(5);
}  // namespace

Result<std::unique_ptr<MigrationDestination>> MigrationDestination::listen(Machine& machine, const TcpAddress& addr,
                                                                           StatusFn on_status, bool start_paused,
                                                                           MigrationTimeouts timeouts, TlsConfig tls) {
    if (tls.creds && !tls.creds->can_serve())
        return fail(Domain::Migration, fmt::format("the TLS credentials ({}) have no server certificate (server-cert.pem, server-key.pem)",
                                                   tls.creds->describe()));
    auto l = Listener::listen(addr);
    if (!l) return std::unexpected(l.error());
    return std::unique_ptr<MigrationDestination>(
        new MigrationDestination(machine, std::move(*l), std::move(on_status), start_paused, timeouts, std::move(tls)));
}

bool MigrationDestination::secure(Channel& ch) {
    if (!tls_.creds) return true;
    if (auto ok = ch.secure_server(tls_, kHeaderWait); !ok) {
        logger("mig")->warn("dropped a connection: {}", ok.error().message());
        return false;
    }
    return true;
}

MigrationDestination::~MigrationDestination() {
    cancel();
    if (thread_.joinable()) thread_.join();
    urgent_stop_ = true;
    if (urgent_thread_.joinable()) urgent_thread_.join();
}

void MigrationDestination::start() {
    start_ = std::chrono::steady_clock::now();
    stats_.update([&](MigrationStats& s) {
        s.status = MigrationStatus::Setup;
        s.ram_total = m_.memory().total_size();
    });
    thread_ = std::thread([this] { run(); });
}

void MigrationDestination::cancel() {
    cancel_ = true;
    listener_.cancel();
    std::lock_guard lock(ch_mu_);
    if (ch_) ch_->cancel();
    if (urgent_) urgent_->cancel();
}

void MigrationDestination::set_status(MigrationStatus st) {
    stats_.update([&](MigrationStats& s) { s.status = st; });
    if (on_status_) on_status_(st);
}

const char* MigrationDestination::phase_name(Phase p) {
    switch (p) {
        case Phase::Setup: return "setup";
        case Phase::Precopy: return "precopy";
        case Phase::Device: return "device";
        case Phase::Postcopy: return "postcopy";
        case Phase::Complete: return "complete";
        case Phase::Failed: return "failed";
    }
    return "?";
}

std::optional<PostcopyFaultStats> MigrationDestination::fault_stats() const {
    std::lock_guard lock(pc_mu_);
    if (!postcopy_in_) return std::nullopt;
    return postcopy_in_->fault_stats();
}

void MigrationDestination::run() {
    if (auto ok = seccomp::confine_this_thread(seccomp::ThreadKind::Migration); !ok) logger("mig")->error("{}", ok.error().message());
    auto result = receive();
    auto ms = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start_).count());
    if (result) {
        phase_ = Phase::Complete;
        stats_.update([&](MigrationStats& s) { s.total_time_ms = ms; });
        set_status(MigrationStatus::Completed);
        return;
    }
    Phase failed_in = phase_;
    phase_ = Phase::Failed;
    urgent_stop_ = true;
    if (urgent_thread_.joinable()) urgent_thread_.join();
    // Best effort and bounded, without the lock (only this thread replaces ch_). After
    // Go the source needs to know whether the guest ever started here.
    if (ch_) (void)send_error(*ch_, result.error().message(), started_ ? kErrorFailed : kErrorGuestNotStarted);
    if (failed_in == Phase::Postcopy) {
        // Guest RAM is incomplete here: the guest must not run on. Ask the vCPUs to stop
        // before they enter the guest again, release whatever waits on a page that will
        // never come (it gets a zero page, and leaves KVM_RUN at once), then park them.
        m_.request_pause();
        {
            std::lock_guard lock(pc_mu_);
            if (postcopy_in_) postcopy_in_->abort();
        }
        m_.pause();
    }
    stats_.update([&](MigrationStats& s) {
        s.total_time_ms = ms;
        s.error = cancel_ ? "cancelled" : fmt::format("{} (in the {} phase)", result.error().message(), phase_name(failed_in));
    });
    set_status(cancel_ ? MigrationStatus::Cancelled : MigrationStatus::Failed);
}

// Accepts connections until one opens with a valid migration header within
// kHeaderWait: junk and idle connections are dropped and told only "refused". Once
// the source is in (and its second connection, with postcopy-preempt), the listener
// closes: a further connection is refused by TCP itself.
Result<StreamHeader> MigrationDestination::accept_source() {
    auto log = logger("mig");
    for (;;) {
        auto ch = listener_.accept();
        if (!ch) return std::unexpected(ch.error());
        (void)ch->set_receive_timeout(kHeaderWait);
        {
            std::lock_guard lock(ch_mu_);
            ch_ = std::make_unique<Channel>(std::move(*ch));
            if (cancel_) return fail(Domain::Migration, "cancelled");
        }
        if (!secure(*ch_)) {
            if (cancel_) return fail(Domain::Migration, "cancelled");
            std::lock_guard lock(ch_mu_);
            ch_.reset();
            continue;
        }
        auto hs = expect_section(*ch_, SectionKind::Header);
        Result<StreamHeader> h = hs ? decode_header(hs->payload) : std::unexpected(hs.error());
        if (h) {
            (void)ch_->set_receive_timeout(timeouts_.stall);
            (void)ch_->set_send_timeout(timeouts_.stall);
            return h;
        }
        if (cancel_) return fail(Domain::Migration, "cancelled");
        log->warn("dropped a connection that opened with no valid migration header within {} s: {}",
                  std::chrono::duration_cast<std::chrono::seconds>(kHeaderWait).count(), h.error().message());
        (void)send_error(*ch_, "refused", kErrorFailed, std::chrono::milliseconds(500));
        std::lock_guard lock(ch_mu_);
        ch_.reset();
    }
}

Result<void> MigrationDestination::receive() {
    auto theirs = accept_source();
    if (!theirs) return std::unexpected(theirs.error());
    if (on_status_) on_status_(MigrationStatus::Setup);
    if (auto ok = accept_header(*theirs); !ok) return ok;
    listener_.close();

    phase_ = Phase::Precopy;
    Section section{};
    section.payload.reserve(kMaxSectionPayload);
    bool state_end = false;
    while (phase_ == Phase::Precopy || phase_ == Phase::Device) {
        if (auto ok = recv_section_into(*ch_, section); !ok) return ok;
        if (section.kind == SectionKind::Error) return fail(Domain::Migration, "the source reported: " + error_reason(section));
        if (phase_ == Phase::Precopy && (section.kind == SectionKind::VcpuState || section.kind == SectionKind::VmState ||
                                         section.kind == SectionKind::DeviceState || section.kind == SectionKind::StateEnd))
            phase_ = Phase::Device;
        auto ok = phase_ == Phase::Precopy ? on_precopy(section) : on_device(section, state_end);
        if (!ok) return ok;
        if (state_end) break;
    }
    if (auto ok = switch_over(); !ok) return ok;
    if (!postcopy_in_) return {};
    return receive_postcopy();
}

Result<void> MigrationDestination::accept_header(const StreamHeader& header) {
    const StreamHeader* theirs = &header;
    StreamHeader ours;
    ours.cpus = static_cast<uint32_t>(m_.vcpu_count());
    ours.tsc_khz = m_.tsc_khz();
    for (const auto& r : m_.memory().regions()) ours.ram.push_back({r.start, r.size()});
    if (auto why = header_mismatch(ours, *theirs); !why.empty())
        return fail(Domain::Migration, "refusing the incoming guest: " + why);
    if (auto missing = missing_cpu_features(CpuidTable(theirs->cpuid), m_.guest_cpuid()); !missing.empty())
        return fail(Domain::Migration, fmt::format("refusing the incoming guest: it uses CPU features that this ferry's "
                                                   "CPU model {} does not offer: {}",
                                                   m_.config().cpu_model.text(), fmt::join(missing, ", ")));
    uint32_t accepted = 0;
    if (theirs->caps & kCapPostcopy) {
        // Refused here, before any page is sent, so the source simply goes on.
        if (m_.config().prealloc)
            return fail(Domain::Migration, "refusing postcopy: this destination preallocated its RAM, which would "
                                           "defeat the missing-page faults postcopy relies on");
        bool huge = m_.config().backend == Backend::Hugetlbfs;
        if (huge && !(theirs->caps & kCapHugePages))
            return fail(Domain::Migration, "refusing postcopy: this destination's hugetlbfs-backed RAM takes whole 2 MiB pages, "
                                           "and the source does not send them whole");
        auto u = Userfault::open(m_.config().backend);
        if (!u) return fail(Domain::Migration, "refusing postcopy: " + u.error().message());
        uffd_.emplace(std::move(*u));
        postcopy_ = true;
        accepted |= kCapPostcopy | (huge ? kCapHugePages : 0) | (theirs->caps & kCapUrgentChannel);
    }
    // The token a second connection or a recovery connection presents.
    if ((accepted & kCapPostcopy) && ::getrandom(&token_, sizeof(token_), 0) != sizeof(token_))
        return fail_errno(Domain::Migration, "getrandom");
    if (auto ok = send_section(*ch_, SectionKind::HeaderAck, 0, encode_caps(accepted, token_)); !ok) return ok;
    if (accepted & kCapUrgentChannel)
        if (auto ok = accept_urgent_channel(token_); !ok) return ok;
    index_ = PageIndex(m_.memory());
    received_ = std::make_unique<AtomicBitmap>(index_.total());
    boot_ = BootAssembler(m_.memory().total_size(), m_.vcpu_count());
    set_status(MigrationStatus::Active);
    m_.prepare_start();  // vCPU threads exist, parked: Go only wakes them
    vcpus_.assign(m_.vcpu_count(), std::nullopt);
    vcpu_saved_at_ns_.assign(m_.vcpu_count(), 0);
    return {};
}

// The source's second connection (postcopy-preempt), which carries only answers to
// page requests. It must come at once and present the token of this migration's ack.
Result<void> MigrationDestination::accept_urgent_channel(uint64_t token) {
    auto deadline = std::chrono::steady_clock::now() + kUrgentChannelWait;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return fail(Domain::Migration, "the source's second (postcopy-preempt) connection did not come");
        auto ch = listener_.accept(left);
        if (!ch) return fail(Domain::Migration, "the source's second (postcopy-preempt) connection: " + ch.error().message());
        (void)ch->set_receive_timeout(kHeaderWait);
        if (!secure(*ch)) continue;
        auto hello = expect_section(*ch, SectionKind::UrgentHello);
        if (hello && hello->payload.size() == sizeof(token) && std::memcmp(hello->payload.data(), &token, sizeof(token)) == 0) {
            (void)ch->set_receive_timeout(std::chrono::milliseconds(0));
            std::lock_guard lock(ch_mu_);
            urgent_ = std::make_unique<Channel>(std::move(*ch));
            if (cancel_) return fail(Domain::Migration, "cancelled");
            return {};
        }
        if (cancel_) return fail(Domain::Migration, "cancelled");
        logger("mig")->warn("dropped a connection that did not present this migration's token");
        (void)send_error(*ch, "refused", kErrorFailed, std::chrono::milliseconds(500));
    }
}

// A RAM batch before the switch: copied in, and recorded as received.
Result<void> MigrationDestination::place_batch(const Section& s) {
    if (s.instance != kRamPushed) return fail(Domain::Migration, fmt::format("stream: RAM batch of unknown kind {}", s.instance));
    auto r = place_ram_batch(m_.memory(), s.payload, direct_, scratch_);
    if (!r) return std::unexpected(r.error());
    for (const auto& p : scratch_) received_->set(index_.first_page(p.region) + p.index);
    stats_.update([&](MigrationStats& m) {
        m.ram_transferred += 4 + (r->data + r->zero) * 8 + r->data * kPageSize;
        m.ram_normal += r->data;
        m.ram_normal_bytes += r->data * kPageSize;
        m.ram_duplicate += r->zero;
    });
    return {};
}

// A RAM batch after Go, from either connection (the placement is serialized).
Result<void> MigrationDestination::place_postcopy_batch(const Section& s, std::vector<DecodedPage>& scratch) {
    if (s.instance != kRamPushed && s.instance != kRamAnswer)
        return fail(Domain::Migration, fmt::format("stream: RAM batch of unknown kind {}", s.instance));
    RamBatchStats st;
    {
        std::lock_guard lock(place_mu_);
        postcopy_in_->set_batch_kind(s.instance);
        auto r = place_ram_batch(m_.memory(), s.payload, *postcopy_in_, scratch);
        if (!r) return std::unexpected(r.error());
        st = *r;
    }
    stats_.update([&](MigrationStats& m) {
        m.ram_transferred += 4 + (st.data + st.zero) * 8 + st.data * kPageSize;
        m.ram_normal += st.data;
        m.ram_normal_bytes += st.data * kPageSize;
        m.ram_duplicate += st.zero;
    });
    return {};
}

bool MigrationDestination::postcopy_complete() {
    std::lock_guard lock(place_mu_);
    return postcopy_in_->complete();
}

// The second connection's reader (postcopy-preempt): answers only.
void MigrationDestination::urgent_loop() {
    if (auto ok = seccomp::confine_this_thread(seccomp::ThreadKind::Migration); !ok) logger("mig")->error("{}", ok.error().message());
    Section s{};
    s.payload.reserve(kMaxSectionPayload);
    std::vector<DecodedPage> scratch;
    auto stop = [&](std::string why, bool recoverable) {
        std::lock_guard lock(urgent_mu_);
        urgent_error_ = UrgentError{std::move(why), recoverable};
    };
    while (!urgent_stop_ && !postcopy_complete()) {
        auto ready = urgent_->wait_readable(std::chrono::milliseconds(50));
        if (!ready) return stop(ready.error().message(), true);
        if (!*ready) continue;
        if (auto ok = recv_section_into(*urgent_, s); !ok) return stop(ok.error().message(), true);
        if (s.kind == SectionKind::Error) return stop("the source reported: " + error_reason(s), false);
        if (s.kind != SectionKind::RamBatch || s.instance != kRamAnswer)
            return stop(fmt::format("stream: unexpected {} section on the postcopy-preempt connection", section_name(s.kind)), false);
        if (auto ok = place_postcopy_batch(s, scratch); !ok) return stop(ok.error().message(), false);
    }
}

Result<void> MigrationDestination::on_precopy(Section& s) {
    switch (s.kind) {
        case SectionKind::RamBatch: return place_batch(s);
        case SectionKind::BootInfo: return boot_.on_info(s.payload);
        case SectionKind::BootImage: return boot_.on_image(s.instance, s.payload);
        case SectionKind::Sync: return send_section(*ch_, SectionKind::SyncAck, s.instance, std::span<const uint8_t>());
        case SectionKind::Discard: {
            if (!postcopy_) return fail(Domain::Migration, "stream: a discard section without postcopy");
            auto runs = decode_page_runs(m_.memory(), s.payload);
            if (!runs) return std::unexpected(runs.error());
            for (const auto& r : *runs) {
                uint64_t first = *index_.page_of(r.gpa);
                for (uint32_t i = 0; i < r.pages; ++i) received_->clear(first + i);
            }
            return {};
        }
        default: return fail(Domain::Migration, fmt::format("stream: unexpected {} section during precopy", section_name(s.kind)));
    }
}

Result<void> MigrationDestination::on_device(Section& s, bool& done) {
    switch (s.kind) {
        case SectionKind::VcpuState: {
            if (s.instance >= vcpus_.size())
                return fail(Domain::Migration, fmt::format("state for vCPU {} (this guest has {})", s.instance, vcpus_.size()));
            StateReader r(s.payload);
            uint64_t saved_at = 0;
            r.get(saved_at);
            auto st = VcpuState::load(r);
            if (!st) return std::unexpected(st.error());
            if (!r.at_end()) return fail(Domain::Migration, "vCPU state has trailing bytes");
            vcpus_[s.instance] = std::move(*st);
            vcpu_saved_at_ns_[s.instance] = saved_at;
            return {};
        }
        case SectionKind::VmState: {
            StateReader r(s.payload);
            auto st = VmState::load(r);
            if (!st) return std::unexpected(st.error());
            if (!r.at_end()) return fail(Domain::Migration, "VM state has trailing bytes");
            vm_ = *st;
            return {};
        }
        case SectionKind::DeviceState: {
            if (devices_.size() >= kMaxDeviceRecords)
                return fail(Domain::Migration, fmt::format("stream: more than {} device-state sections", kMaxDeviceRecords));
            auto rec = decode_record(s.payload);
            if (!rec) return std::unexpected(rec.error());
            devices_.push_back(std::move(*rec));
            return {};
        }
        case SectionKind::StateEnd: done = true; return {};
        default: return fail(Domain::Migration, fmt::format("stream: unexpected {} section with the device state", section_name(s.kind)));
    }
}

// Restores the state, arms postcopy when it was agreed, and starts the guest on Go.
Result<void> MigrationDestination::switch_over() {
    set_status(MigrationStatus::Device);
    auto t0 = std::chrono::steady_clock::now();
    if (auto ok = restore(); !ok) return ok;
    if (postcopy_) {
        auto pc = std::make_unique<PostcopyIncoming>(m_, *ch_, std::move(*uffd_), index_, *received_);
        uffd_.reset();
        if (auto ok = pc->prepare(); !ok) return ok;
        std::lock_guard lock(pc_mu_);
        postcopy_in_ = std::move(pc);
    }
    logger("mig")->info("restore took {} us", std::chrono::duration_cast<std::chrono::microseconds>(
                                                  std::chrono::steady_clock::now() - t0).count());
    if (auto ok = send_section(*ch_, SectionKind::Ready, 0, std::span<const uint8_t>()); !ok) return ok;
    if (auto go = expect_section(*ch_, SectionKind::Go); !go) return std::unexpected(go.error());
    // Tests: a destination that cannot start the guest after Go (the source must learn
    // that it never ran here, and resume it).
    if (const char* t = std::getenv("FERRY_TEST_FAIL_START"); t && std::strcmp(t, "1") == 0)
        return fail(Domain::Migration, "cannot start the guest (FERRY_TEST_FAIL_START=1)");
    auto t1 = std::chrono::steady_clock::now();
    if (postcopy_in_) {
        phase_ = Phase::Postcopy;  // from here a failure stops the guest
        // Answers wait behind little unread data, unless they come on a connection of their own.
        if (!urgent_) (void)ch_->set_receive_buffer(postcopy_receive_buffer());
        else urgent_thread_ = std::thread([this] { urgent_loop(); });
    }
    if (auto ok = start_paused_ ? m_.start_paused() : m_.start(); !ok) return ok;
    started_ = true;
    logger("mig")->info("start took {} us", std::chrono::duration_cast<std::chrono::microseconds>(
                                                std::chrono::steady_clock::now() - t1).count());
    (void)send_section(*ch_, SectionKind::Resumed, 0, std::span<const uint8_t>());
    if (postcopy_in_) set_status(MigrationStatus::PostcopyActive);
    // Tell the network the guest's MACs now sit behind this host (QEMU's
    // announce-self, with its default schedule).
    if (auto n = m_.announce(virtio::AnnounceParams{}); n && *n) logger("mig")->info("announcing {} network card(s) with RARP frames", *n);
    return {};
}

Result<void> MigrationDestination::receive_postcopy() {
    for (;;) {
        bool recoverable = false;
        auto ok = postcopy_stream(recoverable);
        if (ok) break;
        if (!recoverable || cancel_) return ok;
        if (auto r = recover_postcopy(ok.error().message()); !r) return r;
    }
    // Every page is here: the guest is whole, whatever happens to the connection now.
    if (auto ok = send_section(*ch_, SectionKind::PostcopyDone, 0, std::span<const uint8_t>()); !ok)
        logger("mig")->warn("postcopy: every page is here, but the source could not be told ({}): it waits paused; end it there "
                            "(migrate_cancel, or quit)", ok.error().message());
    auto fs = postcopy_in_->fault_stats();
    logger("mig")->info("postcopy complete: {} faults, {} pages requested", fs.faults, fs.requests);
    return postcopy_in_->finish();
}

void MigrationDestination::stop_urgent() {
    urgent_stop_ = true;
    if (urgent_thread_.joinable()) urgent_thread_.join();
    urgent_stop_ = false;
}

Result<void> MigrationDestination::postcopy_stream(bool& recoverable) {
    Section s{};
    s.payload.reserve(kMaxSectionPayload);
    auto urgent_error = [&]() -> std::optional<UrgentError> {
        std::lock_guard lock(urgent_mu_);
        return urgent_error_;
    };
    // A failure of the connection itself: closed, reset, stalled past x-stall-timeout,
    // a bad checksum. Anything else (the source's error, a protocol violation, a page
    // that cannot be placed) is final.
    auto broke = [&](const Error& e) -> Result<void> {
        recoverable = true;
        return std::unexpected(e);
    };
    while (!postcopy_complete()) {
        if (urgent_) {
            // The last page may come on the other connection: look up now and then.
            if (auto e = urgent_error()) {
                recoverable = e->recoverable;
                return fail(Domain::Migration, e->why);
            }
            auto ready = ch_->wait_readable(std::chrono::milliseconds(50));
            if (!ready) return broke(ready.error());
            if (!*ready) continue;
        }
        if (auto ok = recv_section_into(*ch_, s); !ok) return broke(ok.error());
        if (s.kind == SectionKind::Error) return fail(Domain::Migration, "the source reported: " + error_reason(s));
        if (s.kind != SectionKind::RamBatch)
            return fail(Domain::Migration, fmt::format("stream: unexpected {} section during postcopy", section_name(s.kind)));
        if (urgent_ && s.instance == kRamAnswer)
            return fail(Domain::Migration, "stream: an answer on the main connection (postcopy-preempt sends them on the second)");
        if (auto ok = place_postcopy_batch(s, scratch_); !ok) return ok;
    }
    stop_urgent();
    if (auto e = urgent_error()) {
        recoverable = e->recoverable;
        return fail(Domain::Migration, e->why);
    }
    return {};
}

Result<uint16_t> MigrationDestination::recover(const TcpAddress& addr) {
    auto st = stats_.get().status;
    if (st != MigrationStatus::PostcopyPaused)
        return fail(Domain::Migration, fmt::format("migrate-recover: no postcopy migration is paused here (it is {})",
                                                   migration_status_name(st)));
    auto l = Listener::listen(addr);
    if (!l) return std::unexpected(l.error());
    uint16_t port = l->port();
    std::lock_guard lock(recover_mu_);
    recover_listener_ = std::make_unique<Listener>(std::move(*l));
    logger("mig")->info("postcopy recovery: waiting for the source on {}:{}", addr.host, port);
    return port;
}

Result<void> MigrationDestination::pause_postcopy() {
    auto st = stats_.get().status;
    if (st != MigrationStatus::PostcopyActive)
        return fail(Domain::Migration, fmt::format("migrate-pause: only a postcopy migration can be paused (this one is {})",
                                                   migration_status_name(st)));
    std::lock_guard lock(ch_mu_);
    if (ch_) ch_->cancel();
    if (urgent_) urgent_->cancel();
    return {};
}

// Waits for migrate-recover's listener, then for a connection that presents this
// migration's token (others are told "refused" and dropped). A newer migrate-recover
// replaces the listener. Only cancel ends the wait.
Result<Channel> MigrationDestination::accept_resume() {
    std::unique_ptr<Listener> l;
    for (;;) {
        if (cancel_) return fail(Domain::Migration, "cancelled while postcopy was paused");
        {
            std::lock_guard lock(recover_mu_);
            if (recover_listener_) l = std::move(recover_listener_);
        }
        if (!l) {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            continue;
        }
        auto ch = l->accept(std::chrono::milliseconds(100));
        if (!ch) continue;  // none yet (or the listener failed: a new migrate-recover replaces it)
        (void)ch->set_receive_timeout(kHeaderWait);
        if (!secure(*ch)) continue;
        auto s = recv_section(*ch);
        auto token = s ? resume_token(*s) : Result<uint64_t>(std::unexpected(s.error()));
        if (token && *token == token_) {
            l->close();
            return std::move(*ch);
        }
        logger("mig")->warn("postcopy recovery: dropped a connection that did not present this migration's token");
        (void)send_error(*ch, "refused", kErrorFailed, std::chrono::milliseconds(500));
    }
}

// The connection broke: pause (the guest runs on; what it lacks it waits for), and
// wait for a recovery. The pages stay; the fault thread goes on noting faults.
Result<void> MigrationDestination::recover_postcopy(const std::string& why) {
    auto log = logger("mig");
    stop_urgent();
    {
        std::lock_guard lock(ch_mu_);
        ch_->cancel();
        if (urgent_) urgent_->cancel();
    }
    postcopy_in_->set_channel(nullptr);  // the fault thread's send returned (cancelled) or waits for nothing
    {
        std::lock_guard lock(ch_mu_);
        ch_.reset();
        urgent_.reset();  // after a recovery, answers come on the one connection
    }
    {
        std::lock_guard lock(urgent_mu_);
        urgent_error_.reset();
    }
    stats_.update([&](MigrationStats& s) {
        s.postcopy_pauses++;
        s.pause_reason = why;
    });
    set_status(MigrationStatus::PostcopyPaused);
    log->warn("postcopy paused: {}. The guest runs on here and keeps its pages; a vCPU that touches a page not here yet "
              "waits for it. Recover: QMP migrate-recover here, then migrate with \"resume\": true on the source",
              why);
    for (;;) {
        auto ch = accept_resume();
        if (!ch) return std::unexpected(ch.error());
        set_status(MigrationStatus::PostcopyRecover);
        (void)ch->set_receive_timeout(timeouts_.stall);
        (void)ch->set_send_timeout(timeouts_.stall);
        postcopy_in_->forget_staged();  // no thread places now
        auto ok = send_received_bitmap(*ch, *received_);
        if (ok) {
            (void)ch->set_receive_buffer(postcopy_receive_buffer());
            {
                std::lock_guard lock(ch_mu_);
                ch_ = std::make_unique<Channel>(std::move(*ch));
                if (cancel_) return fail(Domain::Migration, "cancelled");
            }
            postcopy_in_->set_channel(ch_.get());
            ok = postcopy_in_->ask_waiting();
            if (ok) {
                set_status(MigrationStatus::PostcopyActive);
                log->info("postcopy recovered: {} of {} pages here", received_->count(), index_.total());
                return {};
            }
            postcopy_in_->set_channel(nullptr);
            std::lock_guard lock(ch_mu_);
            ch_.reset();
        }
        log->warn("postcopy recovery failed: {}; still paused (migrate-recover and resume again)", ok.error().message());
        set_status(MigrationStatus::PostcopyPaused);
    }
}

Result<void> MigrationDestination::restore() {
    for (size_t i = 0; i < vcpus_.size(); ++i)
        if (!vcpus_[i]) return fail(Domain::Migration, fmt::format("the stream carried no state for vCPU {}", i));
    if (!vm_) return fail(Domain::Migration, "the stream carried no VM state");
    // The guest's TSC keeps running across the migration, as wall-clock time does:
    // advance it by the time since the source read it (both hosts' clocks synced).
    uint64_t now = realtime_ns();
    for (size_t i = 0; i < vcpus_.size(); ++i) {
        auto& st = *vcpus_[i];
        if (auto* tsc = st.find_msr(kMsrIa32Tsc); tsc && now > vcpu_saved_at_ns_[i] && m_.tsc_khz()) {
            uint64_t delta = now - vcpu_saved_at_ns_[i];
            if (delta < kMaxTscCatchUpNs)
                tsc->data += static_cast<uint64_t>(static_cast<unsigned __int128>(delta) * m_.tsc_khz() / 1000000u);
        }
        if (auto ok = m_.restore_vcpu(i, st); !ok) return ok;
    }
    if (auto ok = m_.restore_vm(*vm_); !ok) return ok;
    if (auto ok = m_.restore_devices(devices_); !ok) return ok;
    if (boot_.started()) {
        auto boot = boot_.take();
        if (!boot) return std::unexpected(boot.error());
        m_.set_boot_state(std::move(*boot));
    }
    return {};
}

}  // namespace ferry
