// Saved state of the guest's CPUs and in-kernel chips, as plain data, and its
// encoding. Captured while the vCPUs are paused; restored before they first run.
//
// VcpuState: CPUID, REGS, SREGS2, XSAVE, XCRS, MSRS (every MSR KVM can save), LAPIC,
// VCPU_EVENTS, MP_STATE, DEBUGREGS.   VmState: IRQCHIP (PIC master, PIC slave,
// IOAPIC), PIT2, CLOCK (kvmclock, with the host's realtime when it was read).
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "base/error.hpp"
#include "base/state_io.hpp"

namespace ferry {

struct VcpuState {
    std::vector<kvm_cpuid_entry2> cpuid;  // what the guest saw: it keeps seeing it
    kvm_regs regs{};
    kvm_sregs2 sregs2{};
    std::vector<uint8_t> xsave;
    kvm_xcrs xcrs{};
    std::vector<kvm_msr_entry> msrs;
    kvm_lapic_state lapic{};
    kvm_vcpu_events events{};
    kvm_mp_state mp_state{};
    kvm_debugregs debugregs{};

    void save(StateWriter& w) const;
    static Result<VcpuState> load(StateReader& r);
    // The guest's IA32_TSC in `msrs`, if saved.
    kvm_msr_entry* find_msr(uint32_t index);
};

// VM-wide state that belongs to no device: kvmclock. (The PIC, IOAPIC and PIT are
// devices with their own records: vmm/kvm_chips.hpp.)
struct VmState {
    kvm_clock_data clock{};

    void save(StateWriter& w) const;
    static Result<VmState> load(StateReader& r);
};

inline constexpr uint32_t kMsrIa32Tsc = 0x10;

}  // namespace ferry
