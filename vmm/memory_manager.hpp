// Guest RAM, one owner for it: the regions and the host policy applied to each (THP,
// NUMA, KSM, preallocation, memory/policy.hpp) before KVM sees any, their KVM memory
// slots, dirty logging for migration, and the memory report at the end. Machine
// (vmm/machine.hpp) wires it to the devices and vCPUs.
#pragma once

#include <atomic>
#include <memory>

#include "base/error.hpp"
#include "memory/guest_memory.hpp"
#include "vmm/kvm.hpp"

namespace ferry {

struct MachineConfig;

class MemoryManager {
public:
    // Maps the zones (cfg.zones, or one zone of cfg.mem_size), checks their host nodes,
    // applies each region's policy, warns about host settings that defeat one (through
    // cfg.warn), then preallocates if asked (cfg.prealloc_progress).
    static Result<std::unique_ptr<MemoryManager>> create(const MachineConfig& cfg);

    const GuestMemory& memory() const { return mem_; }

    // KVM_SET_USER_MEMORY_REGION for every region (slot = region index).
    Result<void> register_slots(Vm& vm) const;
    // Whether this KVM offers KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 with initially-set
    // bitmaps (probed when the VM is created); dirty logging needs it.
    void set_manual_dirty_log(bool available) { manual_dirty_log_ = available; }
    // Dirty-page logging on every slot (manual protect, initially all set), for migration.
    Result<void> set_dirty_logging(Vm& vm, bool on);
    bool dirty_logging() const { return dirty_logging_; }
    // The memory report (memory/report.hpp), one line per region, into `fd` (not
    // owned); once, however often it is called.
    void write_report(int fd);

private:
    explicit MemoryManager(GuestMemory mem) : mem_(std::move(mem)) {}

    GuestMemory mem_;
    bool manual_dirty_log_ = false;
    std::atomic<bool> dirty_logging_{false};  // a migration is under way
    bool reported_ = false;
};

}  // namespace ferry
