#include "migration/destination.hpp"

#include <time.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "base/log.hpp"
#include "base/state_io.hpp"
#include "migration/stream.hpp"

namespace ferry {

namespace {
uint64_t realtime_ns() {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}
constexpr uint64_t kMaxTscCatchUpNs = 3600ull * 1000000000ull;
}  // namespace

Result<std::unique_ptr<MigrationDestination>> MigrationDestination::listen(Machine& machine, const TcpAddress& addr,
                                                                           StatusFn on_status) {
    auto l = Listener::listen(addr);
    if (!l) return std::unexpected(l.error());
    return std::unique_ptr<MigrationDestination>(new MigrationDestination(machine, std::move(*l), std::move(on_status)));
}

MigrationDestination::~MigrationDestination() {
    cancel();
    if (thread_.joinable()) thread_.join();
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
}

void MigrationDestination::set_status(MigrationStatus st) {
    stats_.update([&](MigrationStats& s) { s.status = st; });
    if (on_status_) on_status_(st);
}

void MigrationDestination::run() {
    auto result = receive();
    auto ms = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start_).count());
    if (result) {
        stats_.update([&](MigrationStats& s) { s.total_time_ms = ms; });
        set_status(MigrationStatus::Completed);
        return;
    }
    {
        std::lock_guard lock(ch_mu_);
        if (ch_) (void)send_error(*ch_, result.error().message());  // best effort
    }
    stats_.update([&](MigrationStats& s) {
        s.total_time_ms = ms;
        s.error = cancel_ ? "cancelled" : result.error().message();
    });
    set_status(cancel_ ? MigrationStatus::Cancelled : MigrationStatus::Failed);
}

Result<void> MigrationDestination::receive() {
    auto ch = listener_.accept();
    if (!ch) return std::unexpected(ch.error());
    {
        std::lock_guard lock(ch_mu_);
        ch_ = std::make_unique<Channel>(std::move(*ch));
        if (cancel_) return fail(Domain::Migration, "cancelled");
    }
    if (on_status_) on_status_(MigrationStatus::Setup);

    auto hs = expect_section(*ch_, SectionKind::Header);
    if (!hs) return std::unexpected(hs.error());
    auto theirs = decode_header(hs->payload);
    if (!theirs) return std::unexpected(theirs.error());
    StreamHeader ours;
    ours.cpus = static_cast<uint32_t>(m_.vcpu_count());
    ours.tsc_khz = m_.tsc_khz();
    for (const auto& r : m_.memory().regions()) ours.ram.push_back({r.start, r.size()});
    if (auto why = header_mismatch(ours, *theirs); !why.empty())
        return fail(Domain::Migration, "refusing the incoming guest: " + why);
    if (auto missing = missing_cpu_features(CpuidTable(theirs->cpuid), m_.guest_cpuid()); !missing.empty())
        return fail(Domain::Migration, fmt::format("refusing the incoming guest: it uses CPU features that this ferry's "
                                                   "--cpu {} does not offer: {}",
                                                   m_.config().cpu_model.text(), fmt::join(missing, ", ")));
    if (auto ok = send_section(*ch_, SectionKind::HeaderAck, 0, std::span<const uint8_t>()); !ok) return ok;
    set_status(MigrationStatus::Active);
    m_.prepare_start();  // vCPU threads exist, parked: Go only wakes them
    vcpus_.assign(m_.vcpu_count(), std::nullopt);
    vcpu_saved_at_ns_.assign(m_.vcpu_count(), 0);

    Section section{};
    section.payload.reserve(kMaxSectionPayload);
    auto* s = &section;
    for (;;) {
        auto batch = recv_section_or_ram(*ch_, m_.memory(), section);
        if (!batch) return std::unexpected(batch.error());
        if (*batch) {
            const RamBatchStats& st = **batch;
            stats_.update([&](MigrationStats& m) {
                m.ram_transferred += 4 + (st.data + st.zero) * 8 + st.data * kPageSize;
                m.ram_normal += st.data;
                m.ram_normal_bytes += st.data * kPageSize;
                m.ram_duplicate += st.zero;
            });
            continue;
        }
        switch (s->kind) {
            case SectionKind::VcpuState: {
                if (s->instance >= vcpus_.size())
                    return fail(Domain::Migration, fmt::format("state for vCPU {} (this guest has {})", s->instance, vcpus_.size()));
                StateReader r(s->payload);
                uint64_t saved_at = 0;
                r.get(saved_at);
                auto st = VcpuState::load(r);
                if (!st) return std::unexpected(st.error());
                if (!r.at_end()) return fail(Domain::Migration, "vCPU state has trailing bytes");
                vcpus_[s->instance] = std::move(*st);
                vcpu_saved_at_ns_[s->instance] = saved_at;
                break;
            }
            case SectionKind::VmState: {
                StateReader r(s->payload);
                auto st = VmState::load(r);
                if (!st) return std::unexpected(st.error());
                if (!r.at_end()) return fail(Domain::Migration, "VM state has trailing bytes");
                vm_ = *st;
                break;
            }
            case SectionKind::DeviceState: devices_ = s->payload; break;
            case SectionKind::Sync:
                if (auto ok = send_section(*ch_, SectionKind::SyncAck, s->instance, std::span<const uint8_t>()); !ok) return ok;
                break;
            case SectionKind::StateEnd: {
                set_status(MigrationStatus::Device);
                auto t0 = std::chrono::steady_clock::now();
                if (auto ok = restore(); !ok) return ok;
                logger("mig")->info("restore took {} us", std::chrono::duration_cast<std::chrono::microseconds>(
                                                              std::chrono::steady_clock::now() - t0).count());
                if (auto ok = send_section(*ch_, SectionKind::Ready, 0, std::span<const uint8_t>()); !ok) return ok;
                if (auto go = expect_section(*ch_, SectionKind::Go); !go) return std::unexpected(go.error());
                auto t1 = std::chrono::steady_clock::now();
                if (auto ok = m_.start(); !ok) return ok;
                logger("mig")->info("start took {} us", std::chrono::duration_cast<std::chrono::microseconds>(
                                                            std::chrono::steady_clock::now() - t1).count());
                (void)send_section(*ch_, SectionKind::Resumed, 0, std::span<const uint8_t>());
                // Tell the network the guest's MACs now sit behind this host (QEMU's
                // announce-self, with its default schedule).
                if (auto n = m_.announce(virtio::AnnounceParams{}); n && *n)
                    logger("mig")->info("announcing {} network card(s) with RARP frames", *n);
                return {};
            }
            case SectionKind::Error: {
                StateReader r(s->payload);
                std::string reason;
                r.get_string(reason, 4096);
                return fail(Domain::Migration, "the source reported: " + reason);
            }
            default:
                return fail(Domain::Migration, fmt::format("stream: unexpected {} section", section_name(s->kind)));
        }
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
    StateReader dr(devices_);
    if (auto ok = m_.restore_devices(dr); !ok) return ok;
    if (!dr.at_end()) return fail(Domain::Migration, "device state has trailing bytes");
    return {};
}

}  // namespace ferry
