// Machine: saving and restoring the guest's CPU, chip and device state, and dirty
// logging. Used by migration; kept apart from machine construction and run control.
#include <fmt/format.h>

#include <algorithm>

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
    VmState s;
    auto pic0 = vm_.get_irqchip(KVM_IRQCHIP_PIC_MASTER);
    auto pic1 = vm_.get_irqchip(KVM_IRQCHIP_PIC_SLAVE);
    auto ioapic = vm_.get_irqchip(KVM_IRQCHIP_IOAPIC);
    auto pit = vm_.get_pit2();
    auto clock = vm_.get_clock();
    for (const Error* e : {pic0 ? nullptr : &pic0.error(), pic1 ? nullptr : &pic1.error(),
                           ioapic ? nullptr : &ioapic.error(), pit ? nullptr : &pit.error(),
                           clock ? nullptr : &clock.error()})
        if (e) return std::unexpected(*e);
    s.pic_master = *pic0;
    s.pic_slave = *pic1;
    s.ioapic = *ioapic;
    s.pit = *pit;
    s.clock = *clock;
    return s;
}

Result<void> Machine::restore_vm(const VmState& s) {
    if (auto ok = vm_.set_irqchip(s.pic_master); !ok) return ok;
    if (auto ok = vm_.set_irqchip(s.pic_slave); !ok) return ok;
    if (auto ok = vm_.set_irqchip(s.ioapic); !ok) return ok;
    if (auto ok = vm_.set_pit2(s.pit); !ok) return ok;
    // With KVM_CLOCK_REALTIME set (as the source's KVM_GET_CLOCK reported it), KVM
    // advances kvmclock by the realtime that passed since the source read it.
    kvm_clock_data c{};
    c.clock = s.clock.clock;
    c.realtime = s.clock.realtime;
    c.flags = s.clock.flags & KVM_CLOCK_REALTIME;
    return vm_.set_clock(c);
}

void Machine::save_devices(StateWriter& w) const {
    w.put_struct(serial_->state());
    w.put_struct(rtc_->state());
    // virtio: count, then per device its type, its own state and the transport +
    // queue state (devices/virtio/mmio.hpp).
    w.put(static_cast<uint32_t>(virtio_.size()));
    for (const auto& v : virtio_) {
        v->drain();
        w.put(v->device().device_type());
        v->device().save_state(w);
        v->save(w);
    }
}

Result<void> Machine::restore_devices(StateReader& r) {
    Serial::State st;
    if (!r.get_struct(st) || st.thre_pending > 1) return fail(Domain::Migration, "serial device state is malformed");
    Rtc::State rtc;
    if (!r.get_struct(rtc) || rtc.index >= sizeof(rtc.cmos)) return fail(Domain::Migration, "RTC device state is malformed");
    uint32_t n = 0;
    if (!r.at_end() && !r.get(n)) return fail(Domain::Migration, "virtio device count is malformed");
    if (n != virtio_.size())
        return fail(Domain::Migration, fmt::format("the source has {} virtio device(s), this machine {} (give the same --disk and --net "
                                                   "options, in the same order)",
                                                   n, virtio_.size()));
    for (auto& v : virtio_) {
        uint32_t type = 0;
        if (!r.get(type)) return fail(Domain::Migration, "virtio device state is malformed");
        if (type != v->device().device_type())
            return fail(Domain::Migration, fmt::format("{}: the source has a virtio device of type {} in this slot, this machine type {} "
                                                       "(give the same --disk and --net options, in the same order)",
                                                       v->id(), type, v->device().device_type()));
        if (auto ok = v->device().restore_state(r); !ok) return ok;
        if (auto ok = v->restore(r); !ok) return ok;
    }
    serial_->set_state(st);
    rtc_->set_state(rtc);
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
