// Reset (QMP system_reset, and the guest's own reset unless --no-reboot): the machine goes back to the state it had before its
// first instruction, captured when it was created, and the kernel is loaded again.
//
// The capture is the same state a migration carries (vmm/machine_state.cpp): each
// vCPU's registers, LAPIC, MSRs and MP state (the APs wait for INIT/SIPI again),
// kvmclock (restored with KVM_CLOCK_REALTIME, so the guest's clock keeps counting
// instead of going back) and every device's record (devices/device_state.hpp: the
// 8250, the RTC, the in-kernel PICs, IOAPIC and PIT, every virtio transport with status
// 0, so the driver must set the device up again). RAM is not cleared, as on real
// hardware and in QEMU; the kernel, initrd, boot information and MP table are written
// again. The capture and the images travel with a migration (the source's
// boot sections), so a migrated guest resets the same way on its destination.
#include <unistd.h>

#include <fmt/format.h>

#include "base/log.hpp"
#include "vmm/machine.hpp"

namespace ferry {

Result<void> Machine::capture_power_on(BootState& p) {
    for (size_t i = 0; i < vcpus_->count(); ++i) {
        auto v = save_vcpu(i);
        if (!v) return std::unexpected(v.error());
        v->cpuid.clear();  // it keeps the CPUID it has (KVM refuses a KVM_SET_CPUID2 after KVM_RUN)
        p.vcpus.push_back(std::move(*v));
    }
    auto vm = save_vm();
    if (!vm) return std::unexpected(vm.error());
    p.vm = *vm;
    auto devices = save_devices();
    if (!devices) return std::unexpected(devices.error());
    p.devices = encode_records(*devices);
    return {};
}

Result<void> Machine::reset() {
    std::lock_guard lock(mu_);
    if (!boot_)
        return fail(Domain::Kvm, "reset: this guest arrived by migration from a source that sent no boot state, and ferry has "
                                 "no kernel to boot it again");
    if (state_ != RunState::Running && state_ != RunState::Paused)
        return fail(Domain::Kvm, fmt::format("reset: the guest is {}", run_state_name(state_)));
    if (memory_->dirty_logging()) return fail(Domain::Kvm, "reset: a migration is in progress (cancel it first)");
    {
        // A pending request: the guest's own reset is what this carries out (forget it);
        // a power-off or a crash wins over a reset.
        std::lock_guard slock(shutdown_mu_);
        if (shutdown_ && shutdown_->kind != ShutdownKind::Reset)
            return fail(Domain::Kvm, "reset: the guest is stopping (" + shutdown_->detail + ")");
        if (shutdown_) {
            shutdown_.reset();
            uint64_t v;
            [[maybe_unused]] ssize_t n = ::read(shutdown_event_.get(), &v, sizeof(v));
        }
    }
    const bool was_running = state_ == RunState::Running;
    vcpus_->pause();  // each completes its last exit first
    devices_->drain();  // nothing in flight writes RAM afterwards
    auto restore = [&]() -> Result<void> {
        if (boot_->vcpus.size() != vcpus_->count()) return fail(Domain::Kvm, "reset: the boot state has another vCPU count");
        auto devices = decode_records(boot_->devices);
        if (!devices) return std::unexpected(devices.error());
        if (auto ok = restore_devices(*devices); !ok) return ok;
        if (auto ok = restore_vm(boot_->vm); !ok) return ok;
        for (size_t i = 0; i < vcpus_->count(); ++i)
            if (auto ok = restore_vcpu(i, boot_->vcpus[i]); !ok) return ok;
        return load_kernel(*boot_);
    };
    if (auto ok = restore(); !ok) {
        state_ = RunState::Paused;
        return fail(Domain::Kvm, fmt::format("reset failed: {}; the guest is paused and may be half reset (quit it, or fix "
                                             "the cause and reset again)",
                                             ok.error().message()));
    }
    logger("vmm")->info("reset: the guest boots again");
    vcpus_->revive();  // a vCPU that asked for the reset parked for good
    if (was_running) {
        vcpus_->resume();
        kick_virtio();  // the drain above holds the devices
    }
    return {};
}

}  // namespace ferry
