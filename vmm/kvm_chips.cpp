#include "vmm/kvm_chips.hpp"

namespace ferry {

std::string KvmIrqchip::state_id() const {
    return chip_ == KVM_IRQCHIP_PIC_MASTER ? "pic-master" : chip_ == KVM_IRQCHIP_PIC_SLAVE ? "pic-slave" : "ioapic";
}

DeviceKind KvmIrqchip::state_kind() const { return chip_ == KVM_IRQCHIP_IOAPIC ? DeviceKind::Ioapic : DeviceKind::Pic; }

Result<void> KvmIrqchip::save(StateWriter& w) const {
    auto chip = vm_.get_irqchip(chip_);
    if (!chip) return std::unexpected(chip.error());
    w.put_struct(*chip);
    return {};
}

Result<void> KvmIrqchip::load(StateReader& r, uint32_t) {
    kvm_irqchip chip{};
    if (!r.get_struct(chip) || chip.chip_id != chip_) return fail(Domain::Migration, state_id() + ": irqchip state is malformed");
    return vm_.set_irqchip(chip);
}

Result<void> KvmPit::save(StateWriter& w) const {
    auto pit = vm_.get_pit2();
    if (!pit) return std::unexpected(pit.error());
    w.put_struct(*pit);
    return {};
}

Result<void> KvmPit::load(StateReader& r, uint32_t) {
    kvm_pit_state2 pit{};
    if (!r.get_struct(pit)) return fail(Domain::Migration, "pit: PIT state is malformed");
    return vm_.set_pit2(pit);
}

}  // namespace ferry
