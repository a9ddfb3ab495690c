// The interface a virtio device model implements for its transport (devices/virtio/
// mmio.hpp). The transport owns the common state (status, features, queues); the
// device owns its configuration space and does the work on its queues once the
// driver set DRIVER_OK (activate) until reset.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "base/state_io.hpp"
#include "devices/virtio/queue.hpp"
#include "memory/guest_memory.hpp"

namespace ferry::virtio {

inline constexpr uint64_t kFVersion1 = 1ull << 32;
inline constexpr uint64_t kFRingIndirectDesc = 1ull << 28;

// What a device gets while active. Queues are the transport's; between activate()
// and reset() only the device touches them.
struct DeviceContext {
    const GuestMemory* mem = nullptr;
    std::vector<Queue>* queues = nullptr;
    uint64_t features = 0;                      // negotiated
    std::function<void(uint16_t queue)> signal;  // used-buffer interrupt
    DirtyFn dirty;                               // may be empty
    // Restored from a migration: do not look at the rings until notified (guest RAM
    // may not be here yet: postcopy); the machine notifies every queue when it starts.
    bool restored = false;
};

class VirtioDevice {
public:
    virtual ~VirtioDevice() = default;
    virtual std::string id() const = 0;
    virtual uint32_t device_type() const = 0;  // 1 = network, 2 = block
    virtual uint64_t features() const = 0;     // offered
    virtual uint16_t num_queues() const = 0;
    virtual uint16_t queue_max_size() const = 0;
    // Configuration space; out-of-range bytes read as 0 and are ignored on write.
    virtual void read_config(uint64_t offset, std::span<uint8_t> data) const = 0;
    virtual void write_config(uint64_t offset, std::span<const uint8_t> data) = 0;
    // DRIVER_OK: start serving the queues.
    virtual void activate(DeviceContext ctx) = 0;
    // The driver notified `queue`.
    virtual void notify(uint16_t queue) = 0;
    // Stop serving the queues (device reset); returns once no request is in flight.
    virtual void reset() = 0;
    // Completes everything available and in flight (vCPUs paused: nothing new comes),
    // then holds: nothing from outside the guest (a received frame) is written to its
    // RAM or rings until resume() or activate(), so the state saved after a drain
    // matches guest RAM (migration's last round, reset).
    virtual void drain() = 0;
    // The guest runs again after a drain.
    virtual void resume() {}
    // An eventfd the device serves `queue` on when it is signalled (the machine hands it
    // to KVM as an ioeventfd on QueueNotify, so notifications need no exit); -1: none,
    // notify() is the only way in.
    virtual int notify_fd(uint16_t) const { return -1; }
    // The device's own state (after the transport's) for migration: what the
    // destination checks against its own configuration (disk size, MAC...).
    virtual void save_state(StateWriter& w) const = 0;
    virtual Result<void> restore_state(StateReader& r) = 0;
};

}  // namespace ferry::virtio
