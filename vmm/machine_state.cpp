// Machine: saving and restoring the guest's CPU, chip and device state, and dirty
// logging. Used by migration; kept apart from machine construction and run control.
#include <fmt/format.h>

#include <algorithm>

#include "vmm/kvm_chips.hpp"
#include "vmm/machine.hpp"

namespace ferry {

Result<void> Machine::probe_saveable_msrs() {
    auto list = kvm_.msr_index_list();
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

Result<VcpuState> Machine::save_vcpu(size_t index) const {
    if (index >= vcpus_.size()) return fail(Domain::Kvm, fmt::format("no vCPU {}", index));
    const Vcpu& v = *vcpus_[index];
    VcpuState s;
    s.cpuid = vcpu_cpuid_[index].entries();
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

Result<void> Machine::restore_vcpu(size_t index, const VcpuState& s) {
    if (index >= vcpus_.size()) return fail(Domain::Kvm, fmt::format("no vCPU {}", index));
    Vcpu& v = *vcpus_[index];
    // The CPU the guest saw at the source (the destination checked it can offer it).
    if (!s.cpuid.empty()) {
        CpuidTable t(s.cpuid);
        if (auto ok = v.set_cpuid(t); !ok) return ok;
        vcpu_cpuid_[index] = std::move(t);
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

std::vector<SavedDevice*> Machine::saved_devices() const {
    std::vector<SavedDevice*> out{serial_.get(), rtc_.get()};
    for (const auto& c : chips_) out.push_back(c.get());
    for (const auto& v : virtio_) out.push_back(v.get());
    return out;
}

Result<std::vector<DeviceRecord>> Machine::save_devices() const {
    std::vector<DeviceRecord> recs;
    for (const SavedDevice* d : saved_devices()) {
        auto rec = save_record(*d);
        if (!rec) return std::unexpected(rec.error());
        recs.push_back(std::move(*rec));
    }
    return recs;
}

Result<void> Machine::restore_devices(const std::vector<DeviceRecord>& recs) {
    auto devices = saved_devices();
    auto find = [&](const std::string& id) -> SavedDevice* {
        for (SavedDevice* d : devices)
            if (d->state_id() == id) return d;
        return nullptr;
    };
    constexpr const char* kSame = "start the destination with the same disks and network cards, in the same order";
    // Every record names one of this machine's devices, once; every device has one.
    for (size_t i = 0; i < recs.size(); ++i) {
        if (!find(recs[i].id))
            return fail(Domain::Migration, fmt::format("the source has a {} '{}' that this machine lacks ({})",
                                                       device_kind_name(recs[i].kind), recs[i].id, kSame));
        for (size_t j = 0; j < i; ++j)
            if (recs[j].id == recs[i].id) return fail(Domain::Migration, fmt::format("device state: two records for '{}'", recs[i].id));
    }
    for (SavedDevice* d : devices)
        if (std::ranges::none_of(recs, [&](const DeviceRecord& r) { return r.id == d->state_id(); }))
            return fail(Domain::Migration, fmt::format("the source sent no state for this machine's {} '{}' ({})",
                                                       device_kind_name(static_cast<uint32_t>(d->state_kind())), d->state_id(), kSame));
    for (const auto& rec : recs)
        if (auto ok = load_record(*find(rec.id), rec); !ok) return ok;
    return {};
}

Result<void> Machine::set_dirty_logging(bool on) {
    if (on && !manual_dirty_log_)
        return fail(Domain::Kvm, "this KVM lacks KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 with initially-set bitmaps");
    for (const auto& r : mem_.regions()) {
        if (auto ok = vm_.set_user_memory_region(r.slot, r.start.raw(), r.size(), r.map.addr(), on ? KVM_MEM_LOG_DIRTY_PAGES : 0); !ok)
            return ok;
    }
    dirty_logging_ = on;
    return {};
}

}  // namespace ferry
