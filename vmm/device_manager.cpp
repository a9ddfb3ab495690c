#include "vmm/device_manager.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>

#include "base/log.hpp"
#include "devices/platform.hpp"
#include "vmm/kvm_chips.hpp"

namespace ferry {

namespace {
constexpr uint16_t kCom1 = 0x3f8;
constexpr uint32_t kCom1Irq = 4;
}  // namespace

DeviceManager::~DeviceManager() {
    // Device threads may still hold a notification: stop them serving the queues before
    // the members they report to (dirty bitmap, RAM) go away.
    for (auto& v : virtio_) v->device().reset();
}

Result<void> DeviceManager::setup(const DeviceConfig& cfg) {
    chips_.push_back(std::make_unique<KvmIrqchip>(vm_, KVM_IRQCHIP_PIC_MASTER));
    chips_.push_back(std::make_unique<KvmIrqchip>(vm_, KVM_IRQCHIP_PIC_SLAVE));
    chips_.push_back(std::make_unique<KvmIrqchip>(vm_, KVM_IRQCHIP_IOAPIC));
    chips_.push_back(std::make_unique<KvmPit>(vm_));
    auto log = logger("dev.serial0");
    serial_ = std::make_shared<Serial>(cfg.serial_fd, [this, log](bool level) {
        if (auto ok = vm_.irq_line(kCom1Irq, level); !ok) log->debug("{}", ok.error().message());
    });
    if (auto ok = pio_.add(kCom1, 8, serial_); !ok) return ok;
    if (auto ok = pio_.add(kExitPort, 4, std::make_shared<ExitPort>(shutdown_)); !ok) return ok;
    if (auto ok = pio_.add(0x60, 5, std::make_shared<I8042>(shutdown_)); !ok) return ok;
    // Present without ACPI tables too: a guest that migrated in from a source with ACPI
    // may still power off through it.
    if (auto ok = pio_.add(kAcpiPmPort, 3, std::make_shared<AcpiPm>(shutdown_)); !ok) return ok;
    uint64_t low_ram = 0, high_ram = 0;
    for (const auto& r : mem_.regions()) (r.start.raw() < kHighRamStart ? low_ram : high_ram) += r.size();
    rtc_ = std::make_shared<Rtc>(low_ram, high_ram, cfg.cpus);
    if (auto ok = pio_.add(kRtcPort, 2, rtc_); !ok) return ok;

    // One virtio-mmio window per device, disks first. Interrupts go through an irqfd
    // (an edge on the IOAPIC pin) and queue notifications come in through ioeventfds
    // on QueueNotify, so neither costs an exit to ferry; without those capabilities the
    // transport pulses KVM_IRQ_LINE and MMIO writes reach the device through the bus.
    for (const auto& r : mem_.regions()) dirty_.emplace_back((r.size() / 4096 + 63) / 64, 0);
    if (cfg.disks.size() + cfg.nets.size() > kMaxVirtioDevices)
        return fail(Domain::Config, fmt::format("at most {} virtio devices (disks and network cards together)", kMaxVirtioDevices));
    for (size_t i = 0; i < cfg.disks.size(); ++i) {
        auto blk = virtio::Blk::open(fmt::format("blk{}", i), cfg.disks[i]);
        if (!blk) return std::unexpected(blk.error());
        if (auto ok = add_virtio(*blk); !ok) return ok;
    }
    for (size_t i = 0; i < cfg.nets.size(); ++i) {
        auto net = virtio::Net::open(fmt::format("net{}", i), cfg.nets[i]);
        if (!net) return std::unexpected(net.error());
        nets_.push_back(*net);
        if (auto ok = add_virtio(*net); !ok) return ok;
    }
    return {};
}

Result<void> DeviceManager::add_virtio(std::shared_ptr<virtio::VirtioDevice> dev) {
    const size_t n = virtio_.size();
    const uint32_t irq = virtio::kFirstIrq + static_cast<uint32_t>(n);
    const uint64_t base = virtio::kMmioBase + n * virtio::kMmioStride;
    auto log = logger("dev." + dev->id());
    virtio::MmioTransport::IrqFn pulse;
    Fd irqfd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (irqfd.valid() && vm_.check_extension(KVM_CAP_IRQFD) > 0 && vm_.irqfd(irqfd.get(), irq)) {
        pulse = [fd = irqfd.get()] {
            uint64_t one = 1;
            [[maybe_unused]] ssize_t w = ::write(fd, &one, sizeof(one));
        };
        virtio_irqfds_.push_back(std::move(irqfd));
    } else {
        log->debug("no irqfd: interrupts through KVM_IRQ_LINE");
        pulse = [this, irq, log] {
            auto up = vm_.irq_line(irq, true);
            auto down = vm_.irq_line(irq, false);
            if (!up || !down) log->debug("irq {}: {}", irq, (!up ? up : down).error().message());
        };
    }
    if (vm_.check_extension(KVM_CAP_IOEVENTFD) > 0) {
        for (uint16_t q = 0; q < dev->num_queues(); ++q) {
            int fd = dev->notify_fd(q);
            if (fd < 0) continue;
            if (auto ok = vm_.ioeventfd(fd, base + virtio::kRegQueueNotify, 4, q); !ok) log->debug("{}", ok.error().message());
        }
    }
    auto t = std::make_shared<virtio::MmioTransport>(std::move(dev), mem_, std::move(pulse),
                                                     [this](Gpa gpa, uint64_t len) { mark_dirty(gpa, len); });
    if (auto ok = mmio_.add(base, virtio::kMmioStride, t); !ok) return ok;
    virtio_.push_back(std::move(t));
    return {};
}

void DeviceManager::drain() {
    for (auto& v : virtio_) v->drain();
}

void DeviceManager::resume() {
    for (auto& v : virtio_) v->device().resume();
    for (auto& v : virtio_)
        for (uint16_t q = 0; q < v->device().num_queues(); ++q) v->device().notify(q);
}

void DeviceManager::resignal() {
    for (auto& v : virtio_) v->resignal();
}

void DeviceManager::abandon_console() {
    if (serial_) serial_->abandon_output();
}

Result<size_t> DeviceManager::announce(const virtio::AnnounceParams& p, const std::vector<std::string>& ids) {
    if (auto ok = virtio::check_announce(p); !ok) return std::unexpected(ok.error());
    std::vector<virtio::Net*> nets;
    for (const auto& n : nets_)
        if (ids.empty() || std::ranges::find(ids, n->id()) != ids.end()) nets.push_back(n.get());
    for (const auto& id : ids)
        if (std::ranges::none_of(nets, [&](auto* n) { return n->id() == id; }))
            return fail(Domain::Config, fmt::format("announce: '{}' is not a network card of this guest", id));
    for (auto* n : nets) n->announce(p);
    return nets.size();
}

void DeviceManager::mark_dirty(Gpa gpa, uint64_t len) {
    if (len == 0) return;
    std::lock_guard lock(dirty_mu_);
    const auto& regions = mem_.regions();
    for (size_t i = 0; i < regions.size() && i < dirty_.size(); ++i) {
        if (!regions[i].contains(gpa)) continue;
        uint64_t first = (gpa.raw() - regions[i].start.raw()) / 4096;
        uint64_t last = std::min(gpa.raw() - regions[i].start.raw() + len - 1, regions[i].size() - 1) / 4096;
        for (uint64_t p = first; p <= last; ++p) dirty_[i][p / 64] |= 1ull << (p % 64);
        return;
    }
}

void DeviceManager::take_dirty(std::vector<std::vector<uint64_t>>& bitmaps) {
    std::lock_guard lock(dirty_mu_);
    for (size_t i = 0; i < bitmaps.size() && i < dirty_.size(); ++i) {
        for (size_t w = 0; w < bitmaps[i].size() && w < dirty_[i].size(); ++w) {
            bitmaps[i][w] |= dirty_[i][w];
            dirty_[i][w] = 0;
        }
    }
}

std::vector<SavedDevice*> DeviceManager::saved_devices() const {
    std::vector<SavedDevice*> out{serial_.get(), rtc_.get()};
    for (const auto& c : chips_) out.push_back(c.get());
    for (const auto& v : virtio_) out.push_back(v.get());
    return out;
}

Result<std::vector<DeviceRecord>> DeviceManager::save() const {
    std::vector<DeviceRecord> recs;
    for (const SavedDevice* d : saved_devices()) {
        auto rec = save_record(*d);
        if (!rec) return std::unexpected(rec.error());
        recs.push_back(std::move(*rec));
    }
    return recs;
}

Result<void> DeviceManager::restore(const std::vector<DeviceRecord>& recs) {
    auto devices = saved_devices();
    auto find = [&](const std::string& id) -> SavedDevice* {
        for (SavedDevice* d : devices)
            if (d->state_id() == id) return d;
        return nullptr;
    };
    constexpr const char* kSame = "start the destination with the same disks and network cards, in the same order";
    // Every record names one of this machine's devices, once; every device has one.
    for (size_t i = 0; i < recs.size(); ++i) {
        if (!find(recs[i].id))
            return fail(Domain::Migration, fmt::format("the source has a {} '{}' that this machine lacks ({})",
                                                       device_kind_name(recs[i].kind), recs[i].id, kSame));
        for (size_t j = 0; j < i; ++j)
            if (recs[j].id == recs[i].id) return fail(Domain::Migration, fmt::format("device state: two records for '{}'", recs[i].id));
    }
    for (SavedDevice* d : devices)
        if (std::ranges::none_of(recs, [&](const DeviceRecord& r) { return r.id == d->state_id(); }))
            return fail(Domain::Migration, fmt::format("the source sent no state for this machine's {} '{}' ({})",
                                                       device_kind_name(static_cast<uint32_t>(d->state_kind())), d->state_id(), kSame));
    for (const auto& rec : recs)
        if (auto ok = load_record(*find(rec.id), rec); !ok) return ok;
    return {};
}

}  // namespace ferry
