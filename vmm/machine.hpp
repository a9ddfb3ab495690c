// Machine: a whole guest, built in an explicit order (KVM, VM, RAM + policy, irqchip,
// buses and devices, vCPUs, boot image) and owning everything it built. The main
// thread drives it: start / pause / resume / stop, and waits on shutdown_fd() for the
// guest (or a device) asking to stop.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "devices/bus.hpp"
#include "devices/serial.hpp"
#include "devices/shutdown.hpp"
#include "memory/guest_memory.hpp"
#include "vmm/kvm.hpp"
#include "vmm/vcpu_thread.hpp"

namespace ferry {

struct MachineConfig {
    uint64_t mem_size = 256ull << 20;
    uint32_t cpus = 1;
    Backend backend = Backend::Anonymous;
    bool thp = true;
    std::string kernel;
    std::optional<std::string> initrd;
    std::string cmdline;
    int serial_fd = 1;  // not owned; -1 discards console output
};

inline constexpr uint32_t kMaxCpus = 64;

enum class RunState { Prelaunch, Running, Paused, Shutdown };
const char* run_state_name(RunState s);

class Machine {
public:
    static Result<std::unique_ptr<Machine>> create(const MachineConfig& cfg);
    ~Machine();

    // Starts the vCPU threads (running).
    Result<void> start();
    void pause();
    void resume();
    // Stops and joins every vCPU thread; the machine cannot run again.
    void stop();

    RunState run_state() const;
    // Readable once the guest or a device asked the machine to stop.
    int shutdown_fd() const { return shutdown_event_.get(); }
    std::optional<ShutdownRequest> shutdown_request() const;

    const GuestMemory& memory() const { return mem_; }
    const MachineConfig& config() const { return cfg_; }
    uint32_t tsc_khz() const { return tsc_khz_; }
    size_t vcpu_count() const { return vcpus_.size(); }

private:
    Machine(const MachineConfig& cfg, KvmSystem kvm, Vm vm, GuestMemory mem, Fd event);
    Result<void> setup_devices();
    Result<void> setup_vcpus();
    Result<void> load_kernel();
    void request_shutdown(ShutdownRequest req);

    MachineConfig cfg_;
    KvmSystem kvm_;
    Vm vm_;
    GuestMemory mem_;
    Bus pio_{"pio"};
    Bus mmio_{"mmio"};
    std::shared_ptr<Serial> serial_;
    std::vector<std::unique_ptr<Vcpu>> vcpus_;
    std::vector<std::unique_ptr<VcpuThread>> threads_;
    uint32_t tsc_khz_ = 0;

    Fd shutdown_event_;
    mutable std::mutex mu_;
    RunState state_ = RunState::Prelaunch;
    mutable std::mutex shutdown_mu_;  // separate: vCPU threads take it while mu_ waits on them
    std::optional<ShutdownRequest> shutdown_;
};

}  // namespace ferry
