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

// A flat ring-0 code segment (selector 0x10, base 0, 4 GiB): 32-bit, or 64-bit when
// `long_mode` (L=1, D=0). The data segment to go with it is flat_data_segment().
kvm_segment flat_code_segment(bool long_mode);
kvm_segment flat_data_segment();  // selector 0x18, read/write

// 32-bit protected mode, paging off, flat segments, %ebx = start_info, as the PVH
// boot ABI says.
Result<void> setup_pvh_entry(Vcpu& vcpu, uint32_t entry, uint32_t start_info);

}  // namespace ferry
