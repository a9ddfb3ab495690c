// The guest's vCPUs, one owner for them all: each vCPU with the CPUID its model gives
// it, its thread (vmm/vcpu_thread.hpp: run, pause, resume, stop), and its saved state
// (registers, XSAVE, LAPIC, MSRs... vmm/cpu_state.hpp). Machine (vmm/machine.hpp)
// sequences them with the devices and keeps the run state.
#pragma once

#include <sys/types.h>

#include <memory>
#include <vector>

#include "base/error.hpp"
#include "vmm/cpu_model.hpp"
#include "vmm/cpu_state.hpp"
#include "vmm/kvm.hpp"
#include "vmm/vcpu_thread.hpp"

namespace ferry {

class VcpuManager {
public:
    // `cpus` vCPUs on `vm`, each given the model's CPUID for its APIC id, and a thread
    // each (not started) that dispatches exits through `ctx`. Finds the MSRs this
    // host's KVM can save and the XSAVE size.
    static Result<std::unique_ptr<VcpuManager>> create(KvmSystem& kvm, Vm& vm, uint32_t cpus, const CpuModel& model,
                                                       const VcpuContext& ctx);

    size_t count() const { return vcpus_.size(); }
    Vcpu& vcpu(size_t index) { return *vcpus_[index]; }
    // vCPU 0's CPUID: the CPU the guest sees.
    const CpuidTable& guest_cpuid() const { return cpuid_.front(); }
    uint32_t tsc_khz() const { return tsc_khz_; }

    // The threads (VcpuThread): started running or parked, and every command to all.
    void start(bool paused);
    void pause();
    void request_pause();
    void resume();
    void revive();
    void stop();
    std::vector<pid_t> thread_ids() const;

    // Saved state; the vCPUs must be parked (or not started).
    Result<VcpuState> save(size_t index) const;
    Result<void> restore(size_t index, const VcpuState& state);

private:
    VcpuManager() = default;
    Result<void> probe_saveable_msrs(KvmSystem& kvm);

    std::vector<std::unique_ptr<Vcpu>> vcpus_;
    std::vector<std::unique_ptr<VcpuThread>> threads_;  // after vcpus_: they go first
    std::vector<CpuidTable> cpuid_;  // what each vCPU was given (KVM_SET_CPUID2)
    uint32_t tsc_khz_ = 0;
    size_t xsave_size_ = 4096;
    std::vector<uint32_t> saveable_msrs_;
};

}  // namespace ferry
