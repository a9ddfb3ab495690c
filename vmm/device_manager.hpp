// The guest's devices, one owner for them all (Cloud Hypervisor's DeviceManager is
// the model): the PIO and MMIO buses and what sits on them (the 8250, the power-off
// port, the i8042 reset, the ACPI PM registers, the RTC), the in-kernel PICs, IOAPIC
// and PIT as saved devices, each virtio device behind its virtio-mmio window with its
// interrupt (irqfd) and notifications (ioeventfd), the pages devices wrote (which
// KVM's dirty log does not see), self-announcement, and every device's saved state.
// Machine (vmm/machine.hpp) wires it to the vCPUs and the run state.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "devices/bus.hpp"
#include "devices/device_state.hpp"
#include "devices/rtc.hpp"
#include "devices/serial.hpp"
#include "devices/shutdown.hpp"
#include "devices/virtio/announce.hpp"
#include "devices/virtio/blk.hpp"
#include "devices/virtio/mmio.hpp"
#include "devices/virtio/net.hpp"
#include "memory/guest_memory.hpp"
#include "vmm/kvm.hpp"

namespace ferry {

inline constexpr size_t kMaxVirtioDevices = 8;  // IRQs 5..12

struct DeviceConfig {
    int serial_fd = 1;  // not owned; -1 discards console output
    uint32_t cpus = 1;  // for the RTC's CMOS
    std::vector<virtio::DiskSpec> disks;
    std::vector<virtio::NetSpec> nets;
};

class DeviceManager {
public:
    // `vm` and `mem` outlive the manager; `shutdown` is how a device asks the machine
    // to stop or reset.
    DeviceManager(Vm& vm, const GuestMemory& mem, ShutdownFn shutdown) : vm_(vm), mem_(mem), shutdown_(std::move(shutdown)) {}
    // Stops the virtio devices serving their queues before RAM and the dirty bitmap go.
    ~DeviceManager();

    // Creates every device and puts it on its bus: platform devices, then the disks,
    // then the network cards (virtio device n at kMmioBase + n * kMmioStride, IRQ
    // kFirstIrq + n).
    Result<void> setup(const DeviceConfig& cfg);

    Bus& pio() { return pio_; }
    Bus& mmio() { return mmio_; }
    size_t virtio_count() const { return virtio_.size(); }

    // The vCPUs are parked: every virtio device completes what is available and holds
    // (VirtioDevice::drain). Saving state never drains again.
    void drain();
    // The guest runs (again): devices stop holding and look at their queues (a
    // restored device waits for this: guest RAM may still have been arriving).
    void resume();
    // After a start: raise each interrupt a restored device still owes.
    void resignal();
    // The machine stops for good: a vCPU blocked on a stalled console gives up.
    void abandon_console();

    // Starts a self-announcement on the cards named in `ids` (all when empty); how many.
    Result<size_t> announce(const virtio::AnnounceParams& p, const std::vector<std::string>& ids);

    // ORs into `bitmaps` (one per RAM region) the pages devices wrote since the last
    // call, and forgets them.
    void take_dirty(std::vector<std::vector<uint64_t>>& bitmaps);

    // One record per device; never drains, never writes guest RAM.
    Result<std::vector<DeviceRecord>> save() const;
    // Matches the records to the devices by id (refusing a missing, extra or duplicate
    // one, naming the device), then loads each.
    Result<void> restore(const std::vector<DeviceRecord>& recs);

private:
    Result<void> add_virtio(std::shared_ptr<virtio::VirtioDevice> dev);
    void mark_dirty(Gpa gpa, uint64_t len);
    std::vector<SavedDevice*> saved_devices() const;

    Vm& vm_;
    const GuestMemory& mem_;
    ShutdownFn shutdown_;
    Bus pio_{"pio"};
    Bus mmio_{"mmio"};
    std::shared_ptr<Serial> serial_;
    std::shared_ptr<Rtc> rtc_;
    std::vector<std::unique_ptr<SavedDevice>> chips_;  // the in-kernel PICs, IOAPIC and PIT (vmm/kvm_chips.hpp)
    std::vector<Fd> virtio_irqfds_;  // before virtio_: outlives the transports that write them
    std::vector<std::shared_ptr<virtio::MmioTransport>> virtio_;
    std::vector<std::shared_ptr<virtio::Net>> nets_;  // the network cards among them (announce)
    std::mutex dirty_mu_;
    std::vector<std::vector<uint64_t>> dirty_;  // per region, a bit per page; guarded by dirty_mu_
};

}  // namespace ferry
