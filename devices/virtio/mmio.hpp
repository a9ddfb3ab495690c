// virtio-mmio transport, version 2 (virtio 1.x spec §4.2.2). One 4 KiB window per
// device at kMmioBase + n * kMmioStride, interrupt on IOAPIC pin kFirstIrq + n,
// declared to Linux as virtio_mmio.device=4K@0xd0000000:5 (vmm/boot/linux.cpp).
//
//   0x000 MagicValue 0x74726976 R     0x004 Version 2 R      0x008 DeviceID R
//   0x00c VendorID R                  0x010 DeviceFeatures R 0x014 DeviceFeaturesSel W
//   0x020 DriverFeatures W            0x024 DriverFeaturesSel W
//   0x030 QueueSel W   0x034 QueueNumMax R   0x038 QueueNum W   0x044 QueueReady RW
//   0x050 QueueNotify W               0x060 InterruptStatus R 0x064 InterruptACK W
//   0x070 Status RW (0 = reset)       0x080/0x084 QueueDesc  0x090/0x094 QueueDriver
//   0x0a0/0x0a4 QueueDevice (64-bit addresses, low/high)     0x0fc ConfigGeneration R
//   0x100.. device configuration space
// Registers are 32-bit; other sizes read 0 / are ignored (config space: any size).
// Queue registers are writable only while the driver has not set DRIVER_OK.
// Interrupts: the IrqFn is pulsed (edge) when a used buffer is added.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "base/state_io.hpp"
#include "devices/bus.hpp"
#include "devices/device_state.hpp"
#include "devices/virtio/device.hpp"

namespace ferry::virtio {

inline constexpr uint64_t kMmioBase = 0xd0000000;
inline constexpr uint64_t kMmioStride = 0x1000;
inline constexpr uint32_t kFirstIrq = 5;
inline constexpr uint32_t kMagic = 0x74726976;
inline constexpr uint64_t kRegQueueNotify = 0x050;

inline constexpr uint32_t kStatusAcknowledge = 1, kStatusDriver = 2, kStatusDriverOk = 4, kStatusFeaturesOk = 8,
                          kStatusNeedsReset = 0x40, kStatusFailed = 0x80;

class MmioTransport : public BusDevice, public SavedDevice {
public:
    using IrqFn = std::function<void()>;  // pulse the device's interrupt line
    MmioTransport(std::shared_ptr<VirtioDevice> dev, const GuestMemory& mem, IrqFn irq, DirtyFn dirty = {});
    ~MmioTransport() override;

    std::string id() const override { return dev_->id(); }
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // Plain transport state, for save/restore (the queues follow it).
    struct State {
        uint32_t status = 0;
        uint32_t device_features_sel = 0, driver_features_sel = 0, queue_sel = 0;
        uint32_t interrupt_status = 0;
        uint32_t config_generation = 0;
        uint64_t driver_features = 0;
    };
    // Its record (version 1): the device's own state (VirtioDevice::save_state), then
    // State and a u32 queue count, each queue's QueueState. Call save() drained (vCPUs
    // paused, drain() done): it reads the registers and queues as they are. load()
    // checks the device's state, the registers and every queue before it applies any.
    std::string state_id() const override { return dev_->id(); }
    DeviceKind state_kind() const override { return static_cast<DeviceKind>(0x100 + dev_->device_type()); }
    uint32_t state_version() const override { return 1; }
    Result<void> save(StateWriter& w) const override;
    Result<void> load(StateReader& r, uint32_t version) override;
    // Completes all requests and holds the device (vCPUs paused; VirtioDevice::drain).
    void drain() { dev_->drain(); }
    // Raises the interrupt again when the restored InterruptStatus says one is owed:
    // the source's last irqfd write may have reached its KVM after the state was saved.
    void resignal() {
        if (isr_.load() && irq_) irq_();
    }
    VirtioDevice& device() { return *dev_; }

private:
    uint32_t read_reg(uint64_t offset);
    void write_reg(uint64_t offset, uint32_t v);
    void set_status(uint32_t v);
    void reset_locked();
    void activate_locked(bool restored = false);
    void signal_used();

    std::shared_ptr<VirtioDevice> dev_;
    const GuestMemory& mem_;
    IrqFn irq_;
    DirtyFn dirty_;
    mutable std::mutex mu_;  // guards s_ and queues_ (register side)
    State s_;
    std::atomic<uint32_t> isr_{0};  // InterruptStatus (also set from the device thread)
    std::vector<Queue> queues_;
};

}  // namespace ferry::virtio
