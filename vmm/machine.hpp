// Machine: a whole guest, built in an explicit order (KVM, VM, RAM + policy, irqchip,
// buses and devices, vCPUs, boot image) and owning everything it built. The main
// thread drives it: start / pause / resume / stop, and waits on shutdown_fd() for the
// guest (or a device) asking to stop.
#pragma once

#include <atomic>
#include <functional>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "devices/bus.hpp"
#include "devices/rtc.hpp"
#include "devices/serial.hpp"
#include "devices/shutdown.hpp"
#include "devices/virtio/blk.hpp"
#include "devices/virtio/mmio.hpp"
#include "devices/virtio/net.hpp"
#include "memory/guest_memory.hpp"
#include "memory/prealloc.hpp"
#include "vmm/cpu_model.hpp"
#include "vmm/cpu_state.hpp"
#include "vmm/device_manager.hpp"
#include "vmm/memory_manager.hpp"
#include "vmm/vcpu_manager.hpp"
#include "vmm/kvm.hpp"
#include "vmm/vcpu_thread.hpp"

namespace ferry {

// One guest RAM zone: its size and host NUMA policy (Default: MachineConfig::numa).
struct MemoryZone {
    uint64_t size = 0;
    NumaPolicy numa;
};

struct MachineConfig {
    uint64_t mem_size = 256ull << 20;
    uint32_t cpus = 1;
    Backend backend = Backend::Anonymous;
    bool thp = true;
    std::string kernel;
    std::optional<std::string> initrd;
    std::string cmdline;
    int serial_fd = 1;  // not owned; -1 discards console output
    bool load_kernel = true;  // false for an incoming migration: RAM and CPUs come from the stream
    CpuModel cpu_model;       // which CPUID features the guest sees (vmm/cpu_model.hpp)
    // Hardware-reduced ACPI tables (vmm/boot/acpi.hpp), with the virtio devices in the
    // DSDT; false (--no-acpi): none, and the devices as virtio_mmio.device= words.
    bool acpi = true;

    // Guest RAM policy (memory/policy.hpp), applied per region before KVM sees it.
    bool ksm = false;
    NumaPolicy numa;  // for zones that name no host nodes
    bool prealloc = false;
    // Consecutive guest RAM zones (TOML [[memory-zone]]), each with its own NUMA
    // policy; their sizes add up to mem_size. Empty: one zone of mem_size.
    std::vector<MemoryZone> zones;
    // Each "ferry: warning: ..." line for host settings that defeat a request (KSM
    // on while ksmd is stopped, ...); unset: logged through the "mem" logger.
    std::function<void(const std::string&)> warn;
    PreallocProgressFn prealloc_progress;  // unset: silent
    // When >= 0 (not owned), the memory report (memory/report.hpp) is written here,
    // one line per region, when the machine stops (once).
    int memory_report_fd = -1;
    // virtio devices, each a virtio-mmio window: the disks (--disk) first, then the
    // network cards (--net); device n at 0xd0000000 + n * 0x1000, IRQ 5 + n.
    std::vector<virtio::DiskSpec> disks;
    std::vector<virtio::NetSpec> nets;
};

inline constexpr uint32_t kMaxCpus = 64;

// QEMU's RunState names: inmigrate = waiting for an incoming migration (no guest code
// has run); postmigrate = paused for good after the guest moved away.
// QEMU's run states, as query-status names them. finish-migrate: an outgoing migration
// paused the guest for its switch-over; postmigrate: the guest runs elsewhere now.
enum class RunState { Prelaunch, InMigrate, Running, Paused, FinishMigrate, PostMigrate, Shutdown };
const char* run_state_name(RunState s);

class Machine {
public:
    static Result<std::unique_ptr<Machine>> create(const MachineConfig& cfg);
    ~Machine();

    // Starts the vCPU threads (running).
    Result<void> start();
    // Creates the vCPU threads parked, so that a later start() only wakes them (an
    // incoming migration does this before the downtime begins).
    void prepare_start();
    // After prepare_start(): the machine counts as started but stays paused (resume()
    // runs it); an incoming guest with --paused.
    Result<void> start_paused();
    void pause();
    // Asks every vCPU to pause without waiting (see VcpuThread::request_pause): a
    // postcopy destination that fails does this before it releases the vCPUs waiting
    // on pages that will never come, then pause() completes.
    void request_pause();
    // Resumes a machine paused by pause() (not one in postmigrate).
    void resume();
    // An outgoing migration's switch-over: pauses a running machine (as pause()) or
    // takes a paused one, and marks it finish-migrate; returns whether it was running.
    bool pause_for_migration();
    // The switch-over did not hand the guest over: finish-migrate becomes running
    // again (`resume`) or paused.
    void end_migration_pause(bool resume);
    // After a completed outgoing migration: paused for good.
    void set_postmigrate();
    // QMP system_reset or the guest's own reset (vmm/machine_reset.cpp): back to the
    // state before the first instruction, the kernel loaded again; a paused machine
    // stays paused; a pending reset request is consumed. Refused without a boot state
    // (a guest that arrived from a source that sent none), outside running/paused,
    // while migrating, or while a power-off or crash is pending.
    Result<void> reset();
    // What a reset goes back to: the state before the first instruction, captured at
    // power-on, and the images the kernel was loaded from (kept in memory, as QEMU
    // keeps its ROMs). It travels with a migration, so that a migrated guest can be
    // reset on its destination as it could on its source.
    struct BootState {
        std::vector<VcpuState> vcpus;  // CPUID left out: a vCPU keeps the one it has
        VmState vm;
        std::vector<uint8_t> devices;  // save_devices(), encode_records()
        std::vector<uint8_t> kernel;
        std::optional<std::vector<uint8_t>> initrd;
        std::string cmdline;      // as given; the virtio-mmio devices are added at each load
        std::string kernel_name;  // for messages: the path it came from
    };
    std::shared_ptr<const BootState> boot_state() const;
    // An incoming guest's boot state, from its source (before the machine starts).
    void set_boot_state(std::shared_ptr<const BootState> s);
    // Starts a self-announcement (RARP frames, devices/virtio/announce.hpp) on the
    // network cards named in `ids` (empty: all of them); returns how many. An id that
    // is not a network card fails before any card starts.
    Result<size_t> announce(const virtio::AnnounceParams& p, const std::vector<std::string>& ids = {});
    // Stops and joins every vCPU thread; the machine cannot run again.
    void stop();

    RunState run_state() const;
    // Readable once the guest or a device asked the machine to stop.
    int shutdown_fd() const { return shutdown_event_.get(); }
    std::optional<ShutdownRequest> shutdown_request() const;

    // Saved state (vmm/machine_state.cpp). save_* need the machine paused (or not
    // yet started); restore_* need it not yet started.
    Result<VcpuState> save_vcpu(size_t index) const;
    Result<void> restore_vcpu(size_t index, const VcpuState& state);
    Result<VmState> save_vm() const;
    Result<void> restore_vm(const VmState& state);
    // One record per device (devices/device_state.hpp): the 8250, the RTC, the
    // in-kernel PICs, IOAPIC and PIT, each virtio device. Never drains, never writes
    // guest RAM: pause() and pause_for_migration() drained the devices already.
    Result<std::vector<DeviceRecord>> save_devices() const;
    // Matches the records to this machine's devices by id: refuses a record for a device
    // it lacks, a device without a record, a kind or version it cannot read (naming
    // the device), then loads each.
    Result<void> restore_devices(const std::vector<DeviceRecord>& recs);

    // Dirty-page logging on every RAM slot (KVM_MEM_LOG_DIRTY_PAGES, manual protect,
    // initially all set), for migration.
    Result<void> set_dirty_logging(bool on);
    Vm& vm() { return vm_; }
    // ORs into `bitmaps` (one per RAM region, a bit per page) the pages devices wrote
    // since the last call, and forgets them (KVM's dirty log sees only vCPU writes).
    void take_device_dirty(std::vector<std::vector<uint64_t>>& bitmaps);

    const GuestMemory& memory() const { return memory_->memory(); }
    // vCPU 0's CPUID: the CPU the guest sees (its model applied).
    const CpuidTable& guest_cpuid() const { return vcpus_->guest_cpuid(); }
    const MachineConfig& config() const { return cfg_; }
    uint32_t tsc_khz() const { return vcpus_->tsc_khz(); }
    size_t vcpu_count() const { return vcpus_->count(); }
    // The host thread id of each vCPU's thread, by vCPU index; 0 before start().
    std::vector<pid_t> vcpu_thread_ids() const;

private:
    Machine(const MachineConfig& cfg, KvmSystem kvm, Vm vm, std::unique_ptr<MemoryManager> memory, Fd event);
    Result<void> read_boot_images(BootState& into) const;
    Result<void> load_kernel(const BootState& boot);
    Result<void> capture_power_on(BootState& into);
    void request_shutdown(ShutdownRequest req);
    void kick_virtio() { devices_->resume(); }

    MachineConfig cfg_;
    KvmSystem kvm_;
    Vm vm_;
    std::unique_ptr<MemoryManager> memory_;  // before devices_, whose devices use its RAM
    // Before the vCPUs: they dispatch to its buses, so it goes after them.
    std::unique_ptr<DeviceManager> devices_;
    std::unique_ptr<VcpuManager> vcpus_;  // after devices_: its threads dispatch to the buses
    std::shared_ptr<const BootState> boot_;  // what reset() goes back to (guarded by mu_ once started)

    Fd shutdown_event_;
    mutable std::mutex mu_;
    RunState state_ = RunState::Prelaunch;
    bool threads_parked_ = false;  // prepare_start() ran
    mutable std::mutex shutdown_mu_;  // separate: vCPU threads take it while mu_ waits on them
    std::optional<ShutdownRequest> shutdown_;
};

}  // namespace ferry
