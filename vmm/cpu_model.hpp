// CPU models: which CPUID features a guest sees, so that it can move between hosts.
//
//   host      every feature KVM supports on this host (the default)
//   baseline  x86-64-v2 (SSE4.2, POPCNT, CX16, LAHF) plus AES, PCLMULQDQ, XSAVE (x87/SSE
//             state only), x2APIC, TSC-deadline, RDTSCP, NX, invariant TSC: what any
//             x86-64 server of the last decade provides
//   MODEL,-FEATURE,...   the model with named features hidden (e.g. host,-avx512f)
//
// A migration carries the guest's CPUID; the destination refuses a guest that uses a
// feature its own model does not offer, and otherwise keeps the source's CPUID, so
// the guest sees the same CPU on both ends.
#pragma once

#include <string>
#include <vector>

#include "base/error.hpp"
#include "vmm/kvm.hpp"

namespace ferry {

enum class CpuModelKind { Host, Baseline };

struct CpuModel {
    CpuModelKind kind = CpuModelKind::Host;
    std::vector<std::string> disabled;  // feature names, validated
    std::string text() const;
};

// The features a model can hide, by name (cli/specs.hpp parses "host,-aes").
std::vector<std::string> cpu_feature_names();

// Masks `table` (KVM's supported CPUID, before per-vCPU topology) to the model.
void apply_cpu_model(CpuidTable& table, const CpuModel& model);

// Feature bits that `guest` uses and `offered` lacks, by name where ferry knows one
// (else "leaf 0x7.0 ebx bit 5"). Bits a VMM sets per guest (hypervisor, HTT, OSXSAVE,
// APIC ids) are not features and are ignored.
std::vector<std::string> missing_cpu_features(const CpuidTable& guest, const CpuidTable& offered);

}  // namespace ferry
