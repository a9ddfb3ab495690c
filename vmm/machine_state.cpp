// Machine: the saved state of the guest (its vCPUs', kvmclock, its devices') and dirty
// logging, from the managers that own them. Used by migration and reset.
#include <fmt/format.h>

#include <algorithm>

#include "vmm/machine.hpp"

namespace ferry {

Result<VcpuState> Machine::save_vcpu(size_t index) const { return vcpus_->save(index); }

Result<void> Machine::restore_vcpu(size_t index, const VcpuState& s) { return vcpus_->restore(index, s); }

Result<VmState> Machine::save_vm() const {
    auto clock = vm_.get_clock();
    if (!clock) return std::unexpected(clock.error());
    return VmState{*clock};
}

Result<void> Machine::restore_vm(const VmState& s) {
    // With KVM_CLOCK_REALTIME set (as the source's KVM_GET_CLOCK reported it), KVM
    // advances kvmclock by the realtime that passed since the source read it.
    kvm_clock_data c{};
    c.clock = s.clock.clock;
    c.realtime = s.clock.realtime;
    c.flags = s.clock.flags & KVM_CLOCK_REALTIME;
    return vm_.set_clock(c);
}

Result<std::vector<DeviceRecord>> Machine::save_devices() const { return devices_->save(); }

Result<void> Machine::restore_devices(const std::vector<DeviceRecord>& recs) { return devices_->restore(recs); }

Result<void> Machine::set_dirty_logging(bool on) { return memory_->set_dirty_logging(vm_, on); }

}  // namespace ferry
