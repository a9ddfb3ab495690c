#include "vmm/cpu_state.hpp"

namespace ferry {

namespace {
constexpr size_t kMaxXsave = 64 * 1024;
constexpr uint32_t kMaxMsrs = 1024;
constexpr uint32_t kMaxCpuidEntries = 256;
}  // namespace

void VcpuState::save(StateWriter& w) const {
    w.put(static_cast<uint32_t>(cpuid.size()));
    for (const auto& e : cpuid) w.put_struct(e);
    w.put_struct(regs);
    w.put_struct(sregs2);
    w.put_bytes(xsave);
    w.put_struct(xcrs);
    w.put(static_cast<uint32_t>(msrs.size()));
    for (const auto& m : msrs) w.put_struct(m);
    w.put_struct(lapic);
    w.put_struct(events);
    w.put_struct(mp_state);
    w.put_struct(debugregs);
}

Result<VcpuState> VcpuState::load(StateReader& r) {
    VcpuState s;
    uint32_t ncpuid = 0, nmsrs = 0;
    if (!r.get(ncpuid) || ncpuid > kMaxCpuidEntries) return fail(Domain::Migration, "vCPU state: bad CPUID count");
    s.cpuid.resize(ncpuid);
    for (auto& e : s.cpuid) r.get_struct(e);
    r.get_struct(s.regs);
    r.get_struct(s.sregs2);
    r.get_bytes(s.xsave, kMaxXsave);
    r.get_struct(s.xcrs);
    if (r.get(nmsrs) && nmsrs <= kMaxMsrs) {
        s.msrs.resize(nmsrs);
        for (auto& m : s.msrs) r.get_struct(m);
    } else {
        return fail(Domain::Migration, "vCPU state: bad MSR count");
    }
    r.get_struct(s.lapic);
    r.get_struct(s.events);
    r.get_struct(s.mp_state);
    r.get_struct(s.debugregs);
    if (!r.ok()) return fail(Domain::Migration, "vCPU state is truncated or malformed");
    if (s.xsave.size() < 4096) return fail(Domain::Migration, "vCPU state: XSAVE area too small");
    if (s.xcrs.nr_xcrs > KVM_MAX_XCRS) return fail(Domain::Migration, "vCPU state: bad XCR count");
    return s;
}

kvm_msr_entry* VcpuState::find_msr(uint32_t index) {
    for (auto& m : msrs)
        if (m.index == index) return &m;
    return nullptr;
}

void VmState::save(StateWriter& w) const { w.put_struct(clock); }

Result<VmState> VmState::load(StateReader& r) {
    VmState s;
    if (!r.get_struct(s.clock)) return fail(Domain::Migration, "VM state is truncated or malformed");
    return s;
}

}  // namespace ferry
