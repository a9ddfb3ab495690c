#include "devices/virtio/mmio.hpp"

#include <fmt/format.h>

#include <cstring>

#include "base/log.hpp"

namespace ferry::virtio {

namespace {
constexpr uint32_t kVendor = 0x46455259;  // "FERY"
constexpr uint64_t kConfig = 0x100;
}  // namespace

MmioTransport::MmioTransport(std::shared_ptr<VirtioDevice> dev, const GuestMemory& mem, IrqFn irq, DirtyFn dirty)
    : dev_(std::move(dev)), mem_(mem), irq_(std::move(irq)), dirty_(std::move(dirty)) {
    for (uint16_t i = 0; i < dev_->num_queues(); ++i) queues_.emplace_back(dev_->queue_max_size());
}

MmioTransport::~MmioTransport() { dev_->reset(); }

void MmioTransport::read(uint64_t offset, std::span<uint8_t> data) {
    std::memset(data.data(), 0, data.size());
    if (offset >= kConfig) {
        std::lock_guard lock(mu_);
        dev_->read_config(offset - kConfig, data);
        return;
    }
    if (data.size() != 4 || (offset & 3)) return;
    uint32_t v;
    {
        std::lock_guard lock(mu_);
        v = read_reg(offset);
    }
    std::memcpy(data.data(), &v, 4);
}

void MmioTransport::write(uint64_t offset, std::span<const uint8_t> data) {
    std::lock_guard lock(mu_);
    if (offset >= kConfig) {
        dev_->write_config(offset - kConfig, data);
        return;
    }
    if (data.size() != 4 || (offset & 3)) return;
    uint32_t v;
    std::memcpy(&v, data.data(), 4);
    write_reg(offset, v);
}

uint32_t MmioTransport::read_reg(uint64_t off) {
    Queue* q = s_.queue_sel < queues_.size() ? &queues_[s_.queue_sel] : nullptr;
    switch (off) {
        case 0x000: return kMagic;
        case 0x004: return 2;
        case 0x008: return dev_->device_type();
        case 0x00c: return kVendor;
        case 0x010: {
            uint64_t f = dev_->features() | kFVersion1;
            return s_.device_features_sel == 0 ? static_cast<uint32_t>(f) : s_.device_features_sel == 1 ? static_cast<uint32_t>(f >> 32) : 0;
        }
        case 0x034: return q ? q->max_size() : 0;
        case 0x044: return q && q->ready() ? 1 : 0;
        case 0x060: return isr_.load();
        case 0x070: return s_.status;
        case 0x0fc: return s_.config_generation;
        default: return 0;
    }
}

void MmioTransport::write_reg(uint64_t off, uint32_t v) {
    const bool live = s_.status & kStatusDriverOk;
    Queue* q = !live && s_.queue_sel < queues_.size() ? &queues_[s_.queue_sel] : nullptr;
    auto lo = [](uint64_t old, uint32_t x) { return (old & ~0xffffffffull) | x; };
    auto hi = [](uint64_t old, uint32_t x) { return (old & 0xffffffffull) | static_cast<uint64_t>(x) << 32; };
    switch (off) {
        case 0x014: s_.device_features_sel = v; break;
        case 0x020:
            if (s_.status & kStatusFeaturesOk) break;  // frozen once FEATURES_OK
            if (s_.driver_features_sel == 0) s_.driver_features = lo(s_.driver_features, v);
            else if (s_.driver_features_sel == 1) s_.driver_features = hi(s_.driver_features, v);
            break;
        case 0x024: s_.driver_features_sel = v; break;
        case 0x030: s_.queue_sel = v; break;
        case 0x038: if (q && !q->ready()) q->set_size(static_cast<uint16_t>(v > 0xffff ? 0 : v)); break;
        case 0x044:
            if (q) {
                if (auto ok = q->set_ready(mem_, v == 1); !ok) {
                    logger("dev." + dev_->id())->debug("queue {}: {}", s_.queue_sel, ok.error().message());
                }
            }
            break;
        case kRegQueueNotify:
            if (live && v < queues_.size()) dev_->notify(static_cast<uint16_t>(v));
            break;
        case 0x064: isr_.fetch_and(~v); break;
        case 0x070: set_status(v); break;
        case 0x080: if (q && !q->ready()) q->set_desc(lo(q->state().desc, v)); break;
        case 0x084: if (q && !q->ready()) q->set_desc(hi(q->state().desc, v)); break;
        case 0x090: if (q && !q->ready()) q->set_avail(lo(q->state().avail, v)); break;
        case 0x094: if (q && !q->ready()) q->set_avail(hi(q->state().avail, v)); break;
        case 0x0a0: if (q && !q->ready()) q->set_used(lo(q->state().used, v)); break;
        case 0x0a4: if (q && !q->ready()) q->set_used(hi(q->state().used, v)); break;
        default: break;
    }
}

void MmioTransport::set_status(uint32_t v) {
    if (v == 0) {
        reset_locked();
        return;
    }
    v &= 0xff;
    if ((v & kStatusFeaturesOk) && !(s_.status & kStatusFeaturesOk)) {
        // Refuse features we did not offer, and drivers without VERSION_1.
        uint64_t offered = dev_->features() | kFVersion1;
        if ((s_.driver_features & ~offered) || !(s_.driver_features & kFVersion1)) v &= ~kStatusFeaturesOk;
    }
    bool was_live = s_.status & kStatusDriverOk;
    s_.status = v;
    if (!was_live && (v & kStatusDriverOk) && (v & kStatusFeaturesOk)) activate_locked();
}

void MmioTransport::activate_locked(bool restored) {
    for (auto& q : queues_) q.set_indirect(s_.driver_features & kFRingIndirectDesc);
    DeviceContext ctx;
    ctx.mem = &mem_;
    ctx.queues = &queues_;
    ctx.features = s_.driver_features;
    ctx.signal = [this](uint16_t) { signal_used(); };
    ctx.dirty = dirty_;
    ctx.restored = restored;
    dev_->activate(std::move(ctx));
}

void MmioTransport::reset_locked() {
    dev_->reset();
    for (auto& q : queues_) q.reset();
    s_ = State{};
    isr_ = 0;
}

void MmioTransport::signal_used() {
    isr_.fetch_or(1);
    if (irq_) irq_();
}

Result<void> MmioTransport::save(StateWriter& w) const {
    dev_->save_state(w);
    std::lock_guard lock(mu_);
    State s = s_;
    s.interrupt_status = isr_.load();
    w.put_struct(s);
    w.put(static_cast<uint32_t>(queues_.size()));
    for (const auto& q : queues_) w.put_struct(q.state());
    return {};
}

Result<void> MmioTransport::load(StateReader& r, uint32_t) {
    if (auto ok = dev_->restore_state(r); !ok) return ok;  // checks only (disk size, MAC...)
    State s;
    uint32_t n = 0;
    if (!r.get_struct(s) || !r.get(n)) return fail(Domain::Migration, fmt::format("{}: virtio state is malformed", dev_->id()));
    if (n != queues_.size())
        return fail(Domain::Migration, fmt::format("{}: {} queues in the stream, the device has {}", dev_->id(), n, queues_.size()));
    // DriverFeatures is a plain register until the driver sets FEATURES_OK (which
    // write_reg refuses for features this device does not offer): a guest saved in the
    // middle of its negotiation may hold anything there.
    uint64_t offered = dev_->features() | kFVersion1;
    const bool accepted = s.status & kStatusFeaturesOk;
    if (s.status > 0xff || (accepted && (s.driver_features & ~offered)) || s.interrupt_status > 3)
        return fail(Domain::Migration, fmt::format("{}: virtio status {:#x} / features {:#x} not valid for this device", dev_->id(),
                                                   s.status, s.driver_features));
    std::vector<QueueState> qs(n);
    for (auto& q : qs)
        if (!r.get_struct(q)) return fail(Domain::Migration, fmt::format("{}: virtqueue state is malformed", dev_->id()));
    for (uint32_t i = 0; i < n; ++i)
        if (auto ok = queues_[i].check_restore(qs[i], mem_); !ok)
            return fail(Domain::Migration, fmt::format("{}: queue {}: {}", dev_->id(), i, ok.error().message()));
    std::lock_guard lock(mu_);
    dev_->reset();
    for (uint32_t i = 0; i < n; ++i)
        if (auto ok = queues_[i].restore(qs[i], mem_); !ok)  // checked above: cannot fail
            return fail(Domain::Migration, fmt::format("{}: queue {}: {}", dev_->id(), i, ok.error().message()));
    s_ = s;
    isr_ = s.interrupt_status;
    if ((s_.status & kStatusDriverOk) && (s_.status & kStatusFeaturesOk)) activate_locked(true);
    return {};
}

}  // namespace ferry::virtio
