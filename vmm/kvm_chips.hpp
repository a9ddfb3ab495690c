// The in-kernel interrupt controllers and timer (KVM_CREATE_IRQCHIP, KVM_CREATE_PIT2)
// as saved devices: each 8259A ("pic-master", "pic-slave"), the IOAPIC ("ioapic") and
// the 8254 ("pit") has its own record, like the devices ferry emulates itself
// (devices/device_state.hpp). Their bytes are KVM's own structures, length-prefixed:
// kvm_irqchip (its chip_id must be this chip's) and kvm_pit_state2.
#pragma once

#include "devices/device_state.hpp"
#include "vmm/kvm.hpp"

namespace ferry {

class KvmIrqchip : public SavedDevice {
public:
    // chip: KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE or KVM_IRQCHIP_IOAPIC.
    KvmIrqchip(Vm& vm, uint32_t chip) : vm_(vm), chip_(chip) {}
    std::string state_id() const override;
    DeviceKind state_kind() const override;
    uint32_t state_version() const override { return 1; }
    Result<void> save(StateWriter& w) const override;
    Result<void> load(StateReader& r, uint32_t version) override;

private:
    Vm& vm_;
    uint32_t chip_;
};

class KvmPit : public SavedDevice {
public:
    explicit KvmPit(Vm& vm) : vm_(vm) {}
    std::string state_id() const override { return "pit"; }
    DeviceKind state_kind() const override { return DeviceKind::Pit; }
    uint32_t state_version() const override { return 1; }
    Result<void> save(StateWriter& w) const override;
    Result<void> load(StateReader& r, uint32_t version) override;

private:
    Vm& vm_;
};

}  // namespace ferry
