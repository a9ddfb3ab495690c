#include "vmm/x86.hpp"

#include <algorithm>

namespace ferry {

namespace {
constexpr uint32_t kLeafHypervisor = 0x40000000;
constexpr uint32_t kLeafTiming = 0x40000010;
constexpr uint32_t kCpuidHypervisorBit = 1u << 31;  // leaf 1 ECX
}  // namespace

CpuidTable build_cpuid(const CpuidTable& supported, uint32_t id, uint32_t count, uint32_t tsc_khz) {
    CpuidTable t = supported;
    for (auto& e : t.entries()) {
        switch (e.function) {
            case 1:
                e.ebx = (e.ebx & 0x0000ffff) | (id << 24) | ((count & 0xff) << 16);
                e.ecx |= kCpuidHypervisorBit;
                if (count > 1) e.edx |= 1u << 28;  // HTT: the logical count is valid
                break;
            case 4:
                // Cores per package - 1 in EAX[31:26]; keep the cache description.
                e.eax = (e.eax & 0x03ffffff) | (((count - 1) & 0x3f) << 26);
                break;
            case 0xb:
            case 0x1f:
                e.edx = id;  // x2APIC id
                if (e.index == 0) {
                    e.eax = 0;
                    e.ebx = 1;
                } else if (e.index == 1) {
                    uint32_t shift = 0;
                    while ((1u << shift) < count) ++shift;
                    e.eax = shift;
                    e.ebx = count;
                }
                break;
            case kLeafHypervisor:
                if (tsc_khz) e.eax = std::max<uint32_t>(e.eax, kLeafTiming);
                break;
            default: break;
        }
    }
    if (tsc_khz && !t.find(kLeafTiming)) {
        kvm_cpuid_entry2 timing{};
        timing.function = kLeafTiming;
        timing.eax = tsc_khz;
        timing.ebx = 1000000;  // APIC bus: 1 GHz, as KVM's LAPIC timer counts
        t.entries().push_back(timing);
    }
    return t;
}

kvm_segment flat_code_segment(bool long_mode) {
    kvm_segment code{};
    code.base = 0;
    code.limit = 0xffffffff;
    code.selector = 0x10;
    code.type = 0xb;  // execute/read, accessed
    code.present = 1;
    code.dpl = 0;
    code.s = 1;
    code.g = 1;
    code.l = long_mode ? 1 : 0;
    code.db = long_mode ? 0 : 1;  // a 64-bit code segment must have D = 0
    return code;
}

kvm_segment flat_data_segment() {
    kvm_segment data = flat_code_segment(false);
    data.selector = 0x18;
    data.type = 0x3;  // read/write, accessed
    return data;
}

Result<void> setup_pvh_entry(Vcpu& vcpu, uint32_t entry, uint32_t start_info) {
    auto sregs = vcpu.get_sregs();
    if (!sregs) return std::unexpected(sregs.error());
    kvm_segment code = flat_code_segment(false);
    kvm_segment data = flat_data_segment();
    sregs->cs = code;
    sregs->ds = sregs->es = sregs->fs = sregs->gs = sregs->ss = data;
    kvm_segment tr{};
    tr.limit = 0x67;
    tr.type = 0xb;  // 32-bit busy TSS
    tr.present = 1;
    tr.selector = 0x20;
    sregs->tr = tr;
    sregs->cr0 = 0x11;  // PE | ET
    sregs->cr4 = 0;
    sregs->efer = 0;
    if (auto ok = vcpu.set_sregs(*sregs); !ok) return ok;

    kvm_regs regs{};
    regs.rip = entry;
    regs.rbx = start_info;
    regs.rflags = 0x2;
    return vcpu.set_regs(regs);
}

}  // namespace ferry
