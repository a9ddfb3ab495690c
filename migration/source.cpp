#include "migration/source.hpp"
#include "base/seccomp.hpp"

#include "migration/boot_stream.hpp"

#include <time.h>

#include <cstring>
#include <fmt/format.h>

#include "base/log.hpp"
#include "base/state_io.hpp"
#include "memory/residency.hpp"
#include "migration/policy.hpp"
#include "migration/stream.hpp"

namespace ferry {

namespace {
constexpr uint32_t kClearChunkPages = 1024;  // 4 MiB: cleared just before it is read

uint64_t realtime_ns() {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

uint64_t ms_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count());
}
}  // namespace

MigrationSource::MigrationSource(Machine& machine, TcpAddress to, MigrationParams params, StatusFn on_status)
    : m_(machine), to_(std::move(to)), params_(params), on_status_(std::move(on_status)) {
    batch_entries_.reserve(kMaxBatchPages);
    batch_data_.resize(kMaxBatchPages * kPageSize);
}

MigrationSource::~MigrationSource() {
    cancel();
    if (thread_.joinable()) thread_.join();
}

void MigrationSource::start() {
    start_ = Clock::now();
    stats_.update([&](MigrationStats& s) {
        s.ram_total = m_.memory().total_size();
        s.status = MigrationStatus::Setup;
    });
    thread_ = std::thread([this] { run(); });
}

void MigrationSource::cancel() {
    cancel_ = true;
    {
        std::lock_guard lock(resume_mu_);
        resume_cv_.notify_all();
    }
    std::lock_guard lock(ch_mu_);
    if (ch_) ch_->cancel();
    if (urgent_) urgent_->cancel();
}

void MigrationSource::set_params(const MigrationParams& p) {
    std::lock_guard lock(params_mu_);
    params_ = p;
}

void MigrationSource::set_status(MigrationStatus st) {
    stats_.update([&](MigrationStats& s) { s.status = st; });
    if (on_status_) on_status_(st);
}

void MigrationSource::run() {
    if (auto ok = seccomp::confine_this_thread(seccomp::ThreadKind::Migration); !ok) logger("mig")->error("{}", ok.error().message());
    if (on_status_) on_status_(MigrationStatus::Setup);
    auto log = logger("mig");
    auto result = migrate();
    if (dirty_) dirty_->stop();
    auto end = Clock::now();
    auto close_channel = [&] {
        std::lock_guard lock(ch_mu_);
        if (ch_) ch_->cancel();  // the reader thread returns
        if (back_) back_->join();
        back_.reset();
        ch_.reset();
    };
    if (result) {
        close_channel();
        stats_.update([&](MigrationStats& s) { s.total_time_ms = ms_between(start_, end); });
        set_status(MigrationStatus::Completed);
        return;
    }
    // Failed or cancelled: tell the destination why (best effort, bounded; no lock held:
    // only this thread replaces ch_, and cancel() may shut it down meanwhile), drop the
    // connection, and decide by what the destination confirmed.
    auto ev = back_ ? back_->events() : ReturnPath::Events{};
    if (!ev.resumed_at) ev.resumed_at = dest_resumed_at_;  // said on a connection since lost
    if (ch_) (void)send_error(*ch_, cancelled() ? "the source cancelled the migration" : result.error().message());
    close_channel();
    std::string outcome;
    if (!past_go_) {
        m_.end_migration_pause(we_paused_);  // the guest never left: it runs on as it was
    } else if (ev.not_started) {
        // The destination says it never started the guest: this is the only copy.
        m_.end_migration_pause(we_paused_);
        outcome = we_paused_ ? "; the destination did not start the guest, so it runs here again"
                             : "; the destination did not start the guest; it stays here (paused, as it was)";
    } else if (ev.resumed_at) {
        // The destination ran the guest: resuming here would fork it.
        m_.set_postmigrate();
        outcome = "; the guest ran on the destination, so it stays stopped here (postmigrate)";
    } else {
        // Unknown: the destination may or may not run the guest. Keep it paused and
        // intact, and leave the decision to the operator.
        m_.end_migration_pause(false);
        outcome = "; whether the destination runs the guest is unknown: it is paused here, intact. If it does not "
                  "run on the destination, resume it here with QMP cont";
    }
    if (past_go_) log->error("migration to {} failed after the switch-over: {}{}", to_.text(), result.error().message(), outcome);
    bool was_cancel = cancelled() && !past_go_;
    stats_.update([&](MigrationStats& s) {
        s.total_time_ms = ms_between(start_, end);
        s.error = was_cancel ? "cancelled" : result.error().message() + outcome;
    });
    if (!was_cancel) log->warn("migration to {} failed: {}", to_.text(), result.error().message());
    set_status(was_cancel ? MigrationStatus::Cancelled : MigrationStatus::Failed);
}

Result<void> MigrationSource::migrate() {
    // Setup: connect and agree on the guest's shape.
    const MigrationTimeouts limits = params().timeouts;
    auto ch = Channel::connect(to_, limits.setup, params().tls);
    if (!ch) return std::unexpected(ch.error());
    {
        std::lock_guard lock(ch_mu_);
        ch_ = std::make_unique<Channel>(std::move(*ch));
        if (cancelled()) return fail(Domain::Migration, "cancelled");
    }
    StreamHeader hdr;
    hdr.cpus = static_cast<uint32_t>(m_.vcpu_count());
    hdr.tsc_khz = m_.tsc_khz();
    for (const auto& r : m_.memory().regions()) hdr.ram.push_back({r.start, r.size()});
    hdr.cpuid = m_.guest_cpuid().entries();
    const MigrationParams start_params = params();
    if (start_params.postcopy) hdr.caps |= kCapPostcopy | kCapHugePages | (start_params.postcopy_preempt ? kCapUrgentChannel : 0);
    (void)ch_->set_send_timeout(limits.stall);
    (void)ch_->set_receive_timeout(limits.setup);
    if (auto ok = send_section(*ch_, SectionKind::Header, 0, encode_header(hdr)); !ok) return ok;
    auto ack = expect_section(*ch_, SectionKind::HeaderAck);
    if (!ack) return std::unexpected(ack.error());
    // From here the reader thread waits on the destination, which may be silent for a
    // whole round: dead peers are found by keepalive and TCP_USER_TIMEOUT.
    (void)ch_->set_receive_timeout(std::chrono::milliseconds(0));
    auto caps = decode_caps(ack->payload, &token_);
    if (!caps) return std::unexpected(caps.error());
    postcopy_ok_ = (*caps & kCapPostcopy) != 0;
    unit_pages_ = postcopy_ok_ && (*caps & kCapHugePages) ? kHugePageSize / kPageSize : 1;
    if (start_params.postcopy && !postcopy_ok_) return fail(Domain::Migration, "the destination does not accept postcopy");
    if (start_params.postcopy_preempt) {
        if (!(*caps & kCapUrgentChannel)) return fail(Domain::Migration, "the destination does not accept postcopy-preempt");
        if (auto ok = connect_urgent_channel(token_); !ok) return ok;
    }
    index_ = PageIndex(m_.memory());
    sent_ = std::make_unique<AtomicBitmap>(index_.total());
    back_ = std::make_unique<ReturnPath>(*ch_, m_.memory());
    back_->start();
    // What a reset goes back to, so the guest can be reset where it lands.
    if (auto boot = m_.boot_state())
        if (auto ok = send_boot_state(*ch_, *boot); !ok) return ok;

    dirty_ = std::make_unique<KvmDirtyLog>(m_);
    if (auto ok = dirty_->start(); !ok) return ok;
    stats_.update([&](MigrationStats& s) { s.setup_time_ms = ms_between(start_, Clock::now()); });
    set_status(MigrationStatus::Active);

    // Iterative rounds, until the policy says otherwise.
    std::vector<std::vector<uint64_t>> dirty;
    uint64_t prev_pages = UINT64_MAX;
    for (uint32_t round = 0;; ++round) {
        if (cancelled()) return fail(Domain::Migration, "cancelled");
        if (auto ok = dirty_->sync(dirty); !ok) return ok;
        uint64_t pages = 0;
        for (const auto& b : dirty) pages += count_bits(b);
        MigrationParams p = params();
        auto st = stats_.get();
        RoundFacts facts;
        facts.round = round;
        facts.dirty_pages = pages;
        facts.prev_dirty_pages = prev_pages;
        facts.bytes_per_sec = st.mbps * 1e6 / 8;
        facts.downtime_limit_ms = p.downtime_limit_ms;
        facts.max_rounds = p.max_rounds;
        facts.postcopy_allowed = postcopy_ok_;
        facts.postcopy_auto = p.postcopy_auto;
        facts.postcopy_requested = postcopy_requested_.load();
        PrecopyStep step = next_precopy_step(facts);
        double expected = expected_downtime_ms(pages, facts.bytes_per_sec);
        auto expected_ms = static_cast<uint64_t>(expected + 0.5);
        logger("mig")->debug("round {}: {} dirty pages, expected downtime {} ms: {}", round, pages, expected_ms, precopy_step_name(step));
        stats_.update([&](MigrationStats& s) {
            s.dirty_sync_count++;
            s.ram_remaining = pages * kPageSize;
            s.expected_downtime_ms = expected_ms;
            auto secs = std::chrono::duration<double>(Clock::now() - round_start_).count();
            if (round > 0 && secs > 0) s.dirty_pages_rate = static_cast<uint64_t>(static_cast<double>(pages) / secs);
        });
        switch (step) {
            case PrecopyStep::SendRound: break;
            case PrecopyStep::StopAndCopy: return stop_and_copy(dirty);
            case PrecopyStep::SwitchToPostcopy: return switch_to_postcopy(dirty);
            case PrecopyStep::FailNotConverging:
                return fail(Domain::Migration,
                            fmt::format("not converging: after {} rounds {} MiB are still dirty, expected downtime {} ms > "
                                        "downtime-limit {} ms (raise downtime-limit or max-bandwidth, or use postcopy)",
                                        round, pages * kPageSize >> 20, expected_ms, p.downtime_limit_ms));
        }
        prev_pages = pages;
        if (auto ok = send_round(dirty, round == 0, false); !ok) return ok;
        if (auto ok = sync_with_destination(round); !ok) return ok;
    }
}

// Pauses the guest, sends the last dirty pages and the state, and hands over.
Result<void> MigrationSource::stop_and_copy(std::vector<std::vector<uint64_t>>& dirty) {
    set_status(MigrationStatus::Device);
    paused_at_ = Clock::now();
    we_paused_ = m_.pause_for_migration();
    auto t_paused = Clock::now();
    if (auto ok = dirty_->sync(dirty); !ok) return ok;
    if (auto ok = send_round(dirty, false, true); !ok) return ok;
    auto t_final = Clock::now();
    if (auto ok = send_state(); !ok) return ok;
    auto t_state = Clock::now();
    if (auto ok = wait_ready_and_go(); !ok) return ok;
    auto resumed = back_->wait([](const ReturnPath::Events& e) { return e.resumed_at.has_value(); }, params().timeouts.switchover);
    auto resumed_at = resumed && resumed->resumed_at ? *resumed->resumed_at : Clock::now();
    auto us = [](auto a, auto b) { return std::chrono::duration_cast<std::chrono::microseconds>(b - a).count(); };
    logger("mig")->info("downtime: pause {} us, last round {} us, state {} us, ready+go+resumed {} us", us(paused_at_, t_paused),
                        us(t_paused, t_final), us(t_final, t_state), us(t_state, resumed_at));
    // Done only once the destination says the guest runs there.
    if (!resumed || !resumed->resumed_at) {
        if (resumed && resumed->not_started) return fail(Domain::Migration, "the destination did not start the guest: " + resumed->error);
        return fail(Domain::Migration, "the destination did not confirm that the guest runs there: " +
                                           (resumed ? resumed->error : std::string("no answer in time")));
    }
    stats_.update([&](MigrationStats& s) {
        s.downtime_ms = ms_between(paused_at_, resumed_at);
        s.ram_remaining = 0;
    });
    m_.set_postmigrate();
    return {};
}

// Waits for the destination to have loaded the state, then hands the guest over.
Result<void> MigrationSource::wait_ready_and_go() {
    auto ready = back_->wait([](const ReturnPath::Events& e) { return e.ready; }, params().timeouts.switchover);
    if (!ready) return fail(Domain::Migration, "the destination did not confirm the state in time");
    if (!ready->error.empty()) return fail(Domain::Migration, ready->error);
    if (cancelled()) return fail(Domain::Migration, "cancelled");
    // Past this point the destination owns the guest: never resume here.
    past_go_ = true;
    return send_section(*ch_, SectionKind::Go, 0, std::span<const uint8_t>());
}

Result<void> MigrationSource::send_round(std::vector<std::vector<uint64_t>>& dirty, bool first, bool paused) {
    round_start_ = Clock::now();
    round_bytes_ = 0;
    uint64_t sent_before = ch_->bytes_sent();
    const auto& regions = m_.memory().regions();
    for (size_t ri = 0; ri < regions.size(); ++ri) {
        const auto& region = regions[ri];
        uint64_t npages = region.size() / kPageSize;
        auto& bits = dirty[ri];
        for (uint64_t chunk = 0; chunk < npages; chunk += kClearChunkPages) {
            uint32_t count = static_cast<uint32_t>(std::min<uint64_t>(kClearChunkPages, npages - chunk));
            uint64_t* words = bits.data() + chunk / 64;
            uint64_t nwords = (count + 63) / 64;
            bool any = false;
            for (uint64_t w = 0; w < nwords; ++w) any |= words[w] != 0;
            if (!any) continue;
            if (cancelled()) return fail(Domain::Migration, "cancelled");
            if (!paused && postcopy_ok_ && postcopy_requested_) break;  // the switch comes at once
            if (!paused) {
                if (auto ok = dirty_->clear(ri, chunk, count, words); !ok) return ok;
            }
            // Which pages the host ever backed, read after the clear: a page the guest
            // first touches later is dirty again and goes in the next round.
            std::vector<uint64_t> backed;
            if (first) backed = backed_pages(region, chunk, count);
            for (uint64_t w = 0; w < nwords; ++w) {
                for (uint64_t word = words[w]; word; word &= word - 1) {
                    uint64_t page = chunk + w * 64 + static_cast<uint64_t>(__builtin_ctzll(word));
                    if (page >= npages) break;
                    uint64_t rel = page - chunk;
                    if (first && !(backed[rel / 64] & (1ull << (rel % 64)))) {
                        ++pending_skipped_;
                        continue;
                    }
                    const uint8_t* host = region.map.addr() + page * kPageSize;
                    uint64_t gpa = region.start.raw() + page * kPageSize;
                    if (page_is_zero(host)) {
                        ++pending_duplicate_;
                        if (first) continue;  // the destination's fresh RAM is zero already (not sent)
                        batch_entries_.push_back(gpa | kPageFlagZero);
                    } else {
                        std::memcpy(batch_data_.data() + size_t{batch_data_pages_} * kPageSize, host, kPageSize);
                        ++batch_data_pages_;
                        batch_entries_.push_back(gpa | kPageFlagData);
                    }
                    sent_->set(index_.first_page(static_cast<uint32_t>(ri)) + page);
                    if (batch_entries_.size() == kMaxBatchPages) {
                        if (auto ok = flush_batch(); !ok) return ok;
                    }
                }
            }
        }
    }
    if (auto ok = flush_batch(); !ok) return ok;
    auto secs = std::chrono::duration<double>(Clock::now() - round_start_).count();
    uint64_t bytes = ch_->bytes_sent() - sent_before;
    stats_.update([&](MigrationStats& s) {
        // A round that sent little says nothing about the link: keep the last figure.
        if (bytes >= (1u << 20) && secs > 0) s.mbps = static_cast<double>(bytes) * 8 / secs / 1e6;
        else if (s.mbps == 0 && secs > 0 && bytes > 0) s.mbps = static_cast<double>(bytes) * 8 / secs / 1e6;
    });
    return {};
}

// Waits until the destination has applied everything sent so far, so that the
// throughput counts end to end and no backlog is left to drain inside the downtime.
Result<void> MigrationSource::sync_with_destination(uint32_t round) {
    if (auto ok = send_section(*ch_, SectionKind::Sync, round, std::span<const uint8_t>()); !ok) return ok;
    auto ack = back_->wait([&](const ReturnPath::Events& e) { return e.sync_acks > round; }, params().timeouts.stall);
    if (!ack) return fail(Domain::Migration, "the destination stopped answering");
    if (!ack->error.empty()) return fail(Domain::Migration, ack->error);
    auto secs = std::chrono::duration<double>(Clock::now() - round_start_).count();
    if (round_bytes_ >= (1u << 20) && secs > 0)
        stats_.update([&](MigrationStats& s) { s.mbps = static_cast<double>(round_bytes_) * 8 / secs / 1e6; });
    return {};
}

Result<void> MigrationSource::flush_batch() {
    stats_.update([&](MigrationStats& s) {
        s.ram_skipped += pending_skipped_;
        s.ram_duplicate += pending_duplicate_;
    });
    pending_skipped_ = pending_duplicate_ = 0;
    if (batch_entries_.empty()) return {};
    uint32_t count = static_cast<uint32_t>(batch_entries_.size());
    std::span<const uint8_t> pieces[3] = {
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&count), 4),
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(batch_entries_.data()), count * 8),
        std::span<const uint8_t>(batch_data_.data(), size_t{batch_data_pages_} * kPageSize),
    };
    auto before = ch_->bytes_sent();
    if (auto ok = send_section(*ch_, SectionKind::RamBatch, 0, pieces); !ok) return ok;
    uint64_t sent = ch_->bytes_sent() - before;
    uint32_t data_pages = batch_data_pages_;
    stats_.update([&](MigrationStats& s) {
        s.ram_transferred += sent;
        s.ram_normal += data_pages;
        s.ram_normal_bytes += uint64_t{data_pages} * kPageSize;
    });
    round_bytes_ += sent;
    batch_entries_.clear();
    batch_data_pages_ = 0;
    throttle();
    return {};
}

void MigrationSource::throttle() {
    uint64_t cap;
    {
        std::lock_guard lock(params_mu_);
        cap = params_.max_bandwidth;
    }
    if (cap == 0) return;
    auto due = round_start_ + std::chrono::duration_cast<Clock::duration>(
                                  std::chrono::duration<double>(static_cast<double>(round_bytes_) / static_cast<double>(cap)));
    while (Clock::now() < due && !cancelled()) std::this_thread::sleep_until(std::min(due, Clock::now() + std::chrono::milliseconds(50)));
}

Result<void> MigrationSource::send_state() {
    for (size_t i = 0; i < m_.vcpu_count(); ++i) {
        auto st = m_.save_vcpu(i);
        if (!st) return std::unexpected(st.error());
        StateWriter w;
        w.put(realtime_ns());
        st->save(w);
        if (auto ok = send_section(*ch_, SectionKind::VcpuState, static_cast<uint32_t>(i), w.bytes()); !ok) return ok;
    }
    auto vm = m_.save_vm();
    if (!vm) return std::unexpected(vm.error());
    StateWriter vw;
    vm->save(vw);
    if (auto ok = send_section(*ch_, SectionKind::VmState, 0, vw.bytes()); !ok) return ok;
    // One section per device, its record (devices/device_state.hpp); the devices were
    // drained when the guest was paused.
    auto devices = m_.save_devices();
    if (!devices) return std::unexpected(devices.error());
    for (size_t i = 0; i < devices->size(); ++i) {
        StateWriter dw;
        put_record(dw, (*devices)[i]);
        if (auto ok = send_section(*ch_, SectionKind::DeviceState, static_cast<uint32_t>(i), dw.bytes()); !ok) return ok;
    }
    return send_section(*ch_, SectionKind::StateEnd, 0, std::span<const uint8_t>());
}

}  // namespace ferry
