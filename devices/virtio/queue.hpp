// The ONE split-virtqueue implementation (virtio 1.x, STYLE.md §5). Everything the
// guest controls is read through GuestMemory::slice/read_obj and checked:
//
//   descriptor table  16 bytes x size   {u64 addr, u32 len, u16 flags, u16 next}
//   avail ring        u16 flags, u16 idx, u16 ring[size]            (driver -> device)
//   used ring         u16 flags, u16 idx, {u32 id, u32 len}[size]   (device -> driver)
//
// A chain: head index < size; each `next` < size; at most `size` descriptors (a TTL
// against loops); every buffer [addr, addr+len) inside guest RAM; device-readable
// descriptors before device-writable ones; readable and writable totals fit 32 bits.
// An INDIRECT descriptor (only without NEXT, only when negotiated, never nested)
// points to a table of len/16 descriptors, itself checked through the accessor and
// walked with a TTL of its own size. A malformed chain is consumed and reported
// (Chain::error) so the device can complete it with an error and the guest does not
// hang; an unreadable avail ring or an avail index more than `size` ahead of ours
// is a broken queue (pop() fails).
//
// QueueState is the plain state (what the transport's registers set plus the two
// indices); restore() runs it through the same checks as the driver's QueueReady.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "base/error.hpp"
#include "memory/guest_memory.hpp"

namespace ferry::virtio {

// Called after the device wrote [gpa, gpa+len) of guest RAM (dirty tracking for
// migration: KVM's dirty log sees only vCPU writes).
using DirtyFn = std::function<void(Gpa, uint64_t)>;

inline constexpr uint16_t kDescFNext = 1;
inline constexpr uint16_t kDescFWrite = 2;
inline constexpr uint16_t kDescFIndirect = 4;
inline constexpr uint16_t kMaxQueueSize = 32768;

struct QueueState {
    uint16_t size = 0;   // set by the driver (QueueNum); 0 = not configured
    uint16_t ready = 0;  // 0 or 1
    uint16_t last_avail_idx = 0;
    uint16_t used_idx = 0;
    uint64_t desc = 0, avail = 0, used = 0;  // guest-physical
};

struct Descriptor {
    Gpa addr;
    uint32_t len = 0;
    bool writable = false;
};

struct Chain {
    uint16_t head = 0;
    std::vector<Descriptor> descs;
    uint32_t readable = 0;  // total bytes of device-readable buffers
    uint32_t writable = 0;  // total bytes of device-writable buffers
    std::optional<Error> error;  // set: malformed; complete it with used len 0
};

class Queue {
public:
    explicit Queue(uint16_t max_size) : max_size_(max_size) {}

    uint16_t max_size() const { return max_size_; }
    const QueueState& state() const { return s_; }
    // Register writes from the transport (before the queue is ready).
    void set_size(uint16_t n) { s_.size = n; }
    void set_desc(uint64_t a) { s_.desc = a; }
    void set_avail(uint64_t a) { s_.avail = a; }
    void set_used(uint64_t a) { s_.used = a; }
    // QueueReady = 1: checks the layout; on failure the queue stays not ready.
    Result<void> set_ready(const GuestMemory& mem, bool ready);
    void set_indirect(bool on) { indirect_ = on; }
    void reset() { s_ = QueueState{}; }
    bool ready() const { return s_.ready != 0; }

    // Checks a state (from the driver or a migration stream) against guest RAM.
    static Result<void> validate(const QueueState& s, uint16_t max_size, const GuestMemory& mem);
    Result<void> restore(const QueueState& s, const GuestMemory& mem);
    // What restore() checks, without applying it.
    Result<void> check_restore(const QueueState& s, const GuestMemory& mem) const;

    // The next available chain, std::nullopt when none.
    Result<std::optional<Chain>> pop(const GuestMemory& mem);
    // Puts (head, len) on the used ring and publishes the new used index; reports the
    // bytes it wrote to `dirty` when set.
    Result<void> add_used(const GuestMemory& mem, uint16_t head, uint32_t len, const DirtyFn& dirty = {});

private:
    Gpa used_elem_gpa(uint16_t slot) const { return Gpa(s_.used + 4 + 8ull * slot); }
    Result<void> walk(const GuestMemory& mem, Chain& c) const;

    uint16_t max_size_;
    bool indirect_ = false;
    QueueState s_;
};

}  // namespace ferry::virtio
