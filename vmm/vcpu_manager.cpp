#include "vmm/vcpu_manager.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "vmm/x86.hpp"

namespace ferry {

Result<std::unique_ptr<VcpuManager>> VcpuManager::create(KvmSystem& kvm, Vm& vm, uint32_t cpus, const CpuModel& model,
                                                         const VcpuContext& ctx) {
    std::unique_ptr<VcpuManager> m(new VcpuManager());
    if (int xs = vm.check_extension(KVM_CAP_XSAVE2); xs > 4096) m->xsave_size_ = static_cast<size_t>(xs);
    auto supported = kvm.supported_cpuid();
    if (!supported) return std::unexpected(supported.error());
    apply_cpu_model(*supported, model);
    for (uint32_t i = 0; i < cpus; ++i) {
        auto vcpu = vm.create_vcpu(i);
        if (!vcpu) return std::unexpected(vcpu.error());
        if (i == 0) {
            auto khz = (*vcpu)->get_tsc_khz();
            m->tsc_khz_ = khz ? *khz : 0;
        }
        m->cpuid_.push_back(build_cpuid(*supported, i, cpus, m->tsc_khz_));
        if (auto ok = (*vcpu)->set_cpuid(m->cpuid_.back()); !ok) return std::unexpected(ok.error());
        m->vcpus_.push_back(std::move(*vcpu));
    }
    for (auto& v : m->vcpus_) m->threads_.push_back(std::make_unique<VcpuThread>(*v, ctx));
    if (auto ok = m->probe_saveable_msrs(kvm); !ok) return std::unexpected(ok.error());
    return m;
}

void VcpuManager::start(bool paused) {
    for (auto& t : threads_) t->start(paused);
}

void VcpuManager::pause() {
    for (auto& t : threads_) t->pause();
}

void VcpuManager::request_pause() {
    for (auto& t : threads_) t->request_pause();
}

void VcpuManager::resume() {
    for (auto& t : threads_) t->resume();
}

void VcpuManager::revive() {
    for (auto& t : threads_) t->revive();
}

void VcpuManager::stop() {
    for (auto& t : threads_) t->stop();
}

std::vector<pid_t> VcpuManager::thread_ids() const {
    std::vector<pid_t> ids;
    for (const auto& t : threads_) ids.push_back(t->tid());
    return ids;
}

Result<void> VcpuManager::probe_saveable_msrs(KvmSystem& kvm) {
    auto list = kvm.msr_index_list();
    if (!list) return std::unexpected(list.error());
    // KVM_GET_MSRS stops at the first MSR it cannot read: keep only those that read.
    for (uint32_t index : *list) {
        std::vector<kvm_msr_entry> one(1);
        one[0].index = index;
        auto n = vcpus_[0]->get_msrs(one);
        if (n && *n == 1) saveable_msrs_.push_back(index);
    }
    return {};
}

Result<VcpuState> VcpuManager::save(size_t index) const {
    if (index >= vcpus_.size()) return fail(Domain::Kvm, fmt::format("no vCPU {}", index));
    const Vcpu& v = *vcpus_[index];
    VcpuState s;
    s.cpuid = cpuid_[index].entries();
    auto fill = [](auto& dst, auto got) -> Result<void> {
        if (!got) return std::unexpected(got.error());
        dst = *got;
        return {};
    };
    if (auto ok = fill(s.mp_state, v.get_mp_state()); !ok) return std::unexpected(ok.error());
    if (auto ok = fill(s.regs, v.get_regs()); !ok) return std::unexpected(ok.error());
    if (auto ok = fill(s.sregs2, v.get_sregs2()); !ok) return std::unexpected(ok.error());
    if (auto ok = fill(s.xsave, v.get_xsave(xsave_size_)); !ok) return std::unexpected(ok.error());
    if (auto ok = fill(s.xcrs, v.get_xcrs()); !ok) return std::unexpected(ok.error());
    if (auto ok = fill(s.lapic, v.get_lapic()); !ok) return std::unexpected(ok.error());
    if (auto ok = fill(s.events, v.get_vcpu_events()); !ok) return std::unexpected(ok.error());
    if (auto ok = fill(s.debugregs, v.get_debugregs()); !ok) return std::unexpected(ok.error());
    s.msrs.resize(saveable_msrs_.size());
    for (size_t i = 0; i < saveable_msrs_.size(); ++i) s.msrs[i].index = saveable_msrs_[i];
    auto n = v.get_msrs(s.msrs);
    if (!n) return std::unexpected(n.error());
    if (*n != s.msrs.size())
        return fail(Domain::Kvm, fmt::format("vCPU {}: could read only {} of {} MSRs", index, *n, s.msrs.size()));
    return s;
}

Result<void> VcpuManager::restore(size_t index, const VcpuState& s) {
    if (index >= vcpus_.size()) return fail(Domain::Kvm, fmt::format("no vCPU {}", index));
    Vcpu& v = *vcpus_[index];
    // The CPU the guest saw at the source (the destination checked it can offer it).
    if (!s.cpuid.empty()) {
        CpuidTable t(s.cpuid);
        if (auto ok = v.set_cpuid(t); !ok) return ok;
        cpuid_[index] = std::move(t);
    }
    if (auto ok = v.set_mp_state(s.mp_state); !ok) return ok;
    if (auto ok = v.set_regs(s.regs); !ok) return ok;
    if (auto ok = v.set_sregs2(s.sregs2); !ok) return ok;
    // KVM_SET_XSAVE reads this host's whole XSAVE size (KVM_CAP_XSAVE2): pad a smaller
    // area with zeros (components its header does not mark present); refuse a larger one.
    if (s.xsave.size() > xsave_size_)
        return fail(Domain::Migration, fmt::format("vCPU {}: XSAVE area of {} bytes, this host's KVM takes {}", index, s.xsave.size(),
                                                   xsave_size_));
    std::vector<uint8_t> xsave = s.xsave;
    xsave.resize(xsave_size_, 0);
    if (auto ok = v.set_xsave(xsave); !ok) return ok;
    // A host CPU without XSAVE has no XCRs: KVM_GET_XCRS reports none and KVM_SET_XCRS
    // fails (EINVAL) whatever it is given, so an empty set is not restored (as QEMU does).
    if (s.xcrs.nr_xcrs > 0) {
        if (auto ok = v.set_xcrs(s.xcrs); !ok) return ok;
    }
    if (auto ok = v.set_debugregs(s.debugregs); !ok) return ok;
    if (auto ok = v.set_lapic(s.lapic); !ok) return ok;
    // Only MSRs this host can save are restored; an MSR the source had and this host
    // lacks is an error (the guest could notice it missing).
    for (const auto& m : s.msrs) {
        if (std::find(saveable_msrs_.begin(), saveable_msrs_.end(), m.index) == saveable_msrs_.end())
            return fail(Domain::Migration, fmt::format("vCPU {}: MSR {:#x} cannot be restored on this host", index, m.index));
    }
    auto n = v.set_msrs(s.msrs);
    if (!n) return std::unexpected(n.error());
    if (*n != s.msrs.size())
        return fail(Domain::Kvm, fmt::format("vCPU {}: KVM took only {} of {} MSRs (stopped at {:#x})", index, *n,
                                             s.msrs.size(), s.msrs[*n].index));
    if (auto ok = v.set_vcpu_events(s.events); !ok) return ok;
    return {};
}

}  // namespace ferry
