// x86 vCPU setup: the CPUID each vCPU sees (KVM's supported set, with topology,
// hypervisor and TSC-frequency leaves) and the PVH entry register state.
#pragma once

#include <cstdint>

#include "base/error.hpp"
#include "vmm/kvm.hpp"

namespace ferry {

// CPUID for vCPU `id` of `count`: APIC ids, logical/core counts, the KVM
// signature leaf, and leaf 0x40000010 = {TSC kHz, APIC bus kHz} when tsc_khz != 0.
CpuidTable build_cpuid(const CpuidTable& supported, uint32_t id, uint32_t count, uint32_t tsc_khz);

// 32-bit protected mode, paging off, flat segments, %ebx = start_info, as the PVH
// boot ABI says.
Result<void> setup_pvh_entry(Vcpu& vcpu, uint32_t entry, uint32_t start_info);

}  // namespace ferry
