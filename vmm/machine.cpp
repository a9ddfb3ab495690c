#include "vmm/machine.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>

#include <future>

#include "base/file.hpp"
#include "base/log.hpp"
#include "base/size.hpp"
#include "vmm/boot/linux.hpp"
#include "vmm/boot/acpi.hpp"
#include "vmm/boot/mptable.hpp"
#include "vmm/boot/pvh.hpp"
#include "vmm/x86.hpp"

namespace ferry {

namespace {
constexpr uint64_t kTssAddr = 0xfffbd000;
constexpr uint64_t kIdentityMapAddr = 0xfffbc000;
}  // namespace

const char* run_state_name(RunState s) {
    switch (s) {
        case RunState::Prelaunch: return "prelaunch";
        case RunState::InMigrate: return "inmigrate";
        case RunState::PostMigrate: return "postmigrate";
        case RunState::Running: return "running";
        case RunState::Paused: return "paused";
        case RunState::FinishMigrate: return "finish-migrate";
        case RunState::Shutdown: return "shutdown";
    }
    return "?";
}

Machine::Machine(const MachineConfig& cfg, KvmSystem kvm, Vm vm, std::unique_ptr<MemoryManager> memory, Fd event)
    : cfg_(cfg), kvm_(std::move(kvm)), vm_(std::move(vm)), memory_(std::move(memory)), shutdown_event_(std::move(event)) {}

Machine::~Machine() { stop(); }

Result<std::unique_ptr<Machine>> Machine::create(const MachineConfig& cfg) {
    if (cfg.cpus == 0 || cfg.cpus > kMaxCpus) return fail_config(ConfigItem::Cpus, fmt::format("must be 1..{}", kMaxCpus));
    auto kvm = KvmSystem::open();
    if (!kvm) return std::unexpected(kvm.error());
    auto vm = Vm::create(*kvm);
    if (!vm) return std::unexpected(vm.error());
    if (auto ok = vm->set_tss_addr(kTssAddr); !ok) return std::unexpected(ok.error());
    if (vm->check_extension(KVM_CAP_SET_IDENTITY_MAP_ADDR) > 0) {
        if (auto ok = vm->set_identity_map_addr(kIdentityMapAddr); !ok) return std::unexpected(ok.error());
    }
    if (auto ok = vm->create_irqchip(); !ok) return std::unexpected(ok.error());
    // Dirty logging with manual protect, all pages initially dirty: KVM write-protects
    // a page only when migration clears its bit, just before sending it.
    bool manual_dirty = false;
    if (vm->check_extension(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) & KVM_DIRTY_LOG_INITIALLY_SET) {
        manual_dirty = vm->enable_cap(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
                                      KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET)
                           .has_value();
    }
    if (auto ok = vm->create_pit2(); !ok) return std::unexpected(ok.error());

    // The RAM's top guest-physical address must fit the host's physical address width.
    if (auto cpuid = kvm->supported_cpuid()) {
        if (auto* leaf = cpuid->find(0x80000008)) {
            uint32_t bits = leaf->eax & 0xff;
            uint64_t top = ram_layout(cfg.mem_size).back().start.raw() + ram_layout(cfg.mem_size).back().size;
            if (bits >= 32 && bits < 64 && top > (1ull << bits))
                return fail_config(ConfigItem::Mem, fmt::format("{}: that much guest RAM does not fit this host's {}-bit guest-physical address space",
                                                        format_size(cfg.mem_size), bits));
        }
    }
    auto memory = MemoryManager::create(cfg);
    if (!memory) return std::unexpected(memory.error());
    Fd event(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!event.valid()) return fail_errno(Domain::Kvm, "eventfd");

    std::unique_ptr<Machine> m(new Machine(cfg, std::move(*kvm), std::move(*vm), std::move(*memory), std::move(event)));
    m->memory_->set_manual_dirty_log(manual_dirty);
    if (!cfg.load_kernel) m->state_ = RunState::InMigrate;
    // KVM builds a memory slot's metadata in time proportional to its size (~4 ms for
    // 256 MiB here): give KVM the RAM on a helper thread while devices, vCPUs and the
    // kernel image are set up (the image is copied into host memory, no KVM needed).
    // The future joins in its destructor on every return path.
    auto slots = std::async(std::launch::async, [&m] { return m->memory_->register_slots(m->vm_); });
    Machine* raw = m.get();
    m->devices_ = std::make_unique<DeviceManager>(m->vm_, m->memory_->memory(), [raw](ShutdownRequest r) { raw->request_shutdown(std::move(r)); });
    if (auto ok = m->devices_->setup(DeviceConfig{cfg.serial_fd, cfg.cpus, cfg.disks, cfg.nets}); !ok) return std::unexpected(ok.error());
    VcpuContext ctx{&m->devices_->pio(), &m->devices_->mmio(), [raw](ShutdownRequest r) { raw->request_shutdown(std::move(r)); },
                    logger("vmm")};
    auto vcpus = VcpuManager::create(m->kvm_, m->vm_, cfg.cpus, cfg.cpu_model, ctx);
    if (!vcpus) return std::unexpected(vcpus.error());
    m->vcpus_ = std::move(*vcpus);
    auto boot = std::make_shared<BootState>();
    if (cfg.load_kernel) {
        if (auto ok = m->read_boot_images(*boot); !ok) return std::unexpected(ok.error());
        if (auto ok = m->load_kernel(*boot); !ok) return std::unexpected(ok.error());
    }
    if (auto ok = slots.get(); !ok) return std::unexpected(ok.error());
    if (cfg.load_kernel) {
        if (auto ok = m->capture_power_on(*boot); !ok) return std::unexpected(ok.error());
        m->boot_ = std::move(boot);
    }
    return m;
}

void Machine::take_device_dirty(std::vector<std::vector<uint64_t>>& bitmaps) { devices_->take_dirty(bitmaps); }

// The kernel and initrd files, read once: a reset loads them from memory again.
Result<void> Machine::read_boot_images(BootState& into) const {
    auto kernel = read_file(cfg_.kernel, memory().total_size(), "kernel");
    if (!kernel) return std::unexpected(kernel.error());
    into.kernel = std::move(*kernel);
    if (cfg_.initrd) {
        auto data = read_file(*cfg_.initrd, memory().total_size(), "initrd");
        if (!data) return std::unexpected(data.error());
        into.initrd = std::move(*data);
    }
    into.cmdline = cfg_.cmdline;
    into.kernel_name = cfg_.kernel;
    return {};
}

std::shared_ptr<const Machine::BootState> Machine::boot_state() const {
    std::lock_guard lock(mu_);
    return boot_;
}

void Machine::set_boot_state(std::shared_ptr<const BootState> s) {
    std::lock_guard lock(mu_);
    boot_ = std::move(s);
}

Result<void> Machine::load_kernel(const BootState& boot) {
    const auto& kernel = boot.kernel;
    std::optional<std::span<const uint8_t>> initrd_span;
    // With ACPI the DSDT names the virtio devices; without it (or when the command line
    // tells Linux to ignore the tables) the virtio_mmio.device= words do. Never both: a
    // Linux with ACPI would register each device twice.
    const bool device_words = !cfg_.acpi || cmdline_disables_acpi(boot.cmdline);
    const std::string cmdline = device_words ? with_virtio_mmio_devices(boot.cmdline, devices_->virtio_count(), virtio::kMmioBase,
                                                                        virtio::kMmioStride, virtio::kFirstIrq)
                                             : boot.cmdline;
    if (boot.initrd) initrd_span = std::span<const uint8_t>(*boot.initrd);
    // An ELF with a PVH note boots through PVH; a bzImage, or an ELF vmlinux without
    // the note, through the Linux 64-bit boot protocol (vmm/boot/linux.hpp).
    auto where = [&](const Error& e) { return fail(Domain::Loader, "kernel '" + boot.kernel_name + "': " + e.message()); };
    auto format = detect_kernel_format(kernel);
    if (format == KernelFormat::Unknown) return where(Error{Domain::Loader, 0, "not an ELF file or a bzImage"});
    if (auto ok = write_mptable(memory_->memory(), cfg_.cpus); !ok) return where(ok.error());
    uint64_t rsdp = 0;
    if (cfg_.acpi) {
        AcpiConfig acpi{cfg_.cpus, {}};
        for (size_t i = 0; i < devices_->virtio_count(); ++i)
            acpi.virtio.push_back({virtio::kMmioBase + i * virtio::kMmioStride, virtio::kFirstIrq + static_cast<uint32_t>(i)});
        auto at = write_acpi_tables(memory_->memory(), acpi);
        if (!at) return where(at.error());
        rsdp = *at;
    } else {
        // RAM survives a reset: no RSDP of an earlier boot may be left for a guest to find.
        const std::vector<uint8_t> zeros(kRsdpLength, 0);
        if (auto ok = memory_->memory().write_bytes(Gpa(kAcpiBase), zeros); !ok) return where(ok.error());
    }
    if (format == KernelFormat::PvhElf) {
        auto pvh = load_pvh(memory_->memory(), kernel, initrd_span, cmdline, rsdp);
        if (!pvh) return where(pvh.error());
        return setup_pvh_entry(vcpus_->vcpu(0), pvh->entry, pvh->start_info);
    }
    auto loaded = format == KernelFormat::BzImage ? load_bzimage(memory_->memory(), kernel, initrd_span, cmdline, rsdp)
                                                  : load_vmlinux(memory_->memory(), kernel, initrd_span, cmdline, rsdp);
    if (!loaded) return where(loaded.error());
    return setup_linux64_entry(vcpus_->vcpu(0), *loaded);
}

Result<void> Machine::start() {
    std::lock_guard lock(mu_);
    if (state_ != RunState::Prelaunch && state_ != RunState::InMigrate) return fail(Domain::Kvm, "machine already started");
    if (threads_parked_) vcpus_->resume();
    else vcpus_->start(false);
    state_ = RunState::Running;
    kick_virtio();
    devices_->resignal();
    return {};
}

Result<void> Machine::start_paused() {
    std::lock_guard lock(mu_);
    if (!threads_parked_ || (state_ != RunState::Prelaunch && state_ != RunState::InMigrate))
        return fail(Domain::Kvm, "machine already started, or not prepared");
    state_ = RunState::Paused;
    return {};
}

void Machine::prepare_start() {
    std::lock_guard lock(mu_);
    if (threads_parked_ || (state_ != RunState::Prelaunch && state_ != RunState::InMigrate)) return;
    vcpus_->start(true);
    threads_parked_ = true;
}

void Machine::pause() {
    std::lock_guard lock(mu_);
    if (state_ != RunState::Running) return;
    vcpus_->pause();
    // No vCPU can notify now: complete every request, so RAM holds its results
    // before migration's last round and nothing is in flight when state is saved.
    devices_->drain();
    state_ = RunState::Paused;
}

void Machine::request_pause() {
    // Not under mu_: pause() may hold it, waiting for these very threads.
    if (vcpus_) vcpus_->request_pause();
}

void Machine::resume() {
    std::lock_guard lock(mu_);
    if (state_ != RunState::Paused) return;
    vcpus_->resume();
    state_ = RunState::Running;
    kick_virtio();
}

Result<size_t> Machine::announce(const virtio::AnnounceParams& p, const std::vector<std::string>& ids) {
    return devices_->announce(p, ids);
}

bool Machine::pause_for_migration() {
    std::lock_guard lock(mu_);
    bool was_running = state_ == RunState::Running;
    if (was_running) {
        vcpus_->pause();
        devices_->drain();  // as pause(): nothing in flight when state is saved
    }
    if (was_running || state_ == RunState::Paused) state_ = RunState::FinishMigrate;
    return was_running;
}

void Machine::end_migration_pause(bool resume) {
    std::lock_guard lock(mu_);
    if (state_ != RunState::FinishMigrate) return;
    state_ = RunState::Paused;
    if (!resume) return;
    vcpus_->resume();
    state_ = RunState::Running;
    kick_virtio();
}

void Machine::set_postmigrate() {
    std::lock_guard lock(mu_);
    if (state_ == RunState::Paused || state_ == RunState::FinishMigrate) state_ = RunState::PostMigrate;
}

void Machine::stop() {
    std::lock_guard lock(mu_);
    if (devices_) devices_->abandon_console();  // a vCPU blocked on a stalled console must see the stop
    if (vcpus_) vcpus_->stop();
    if (state_ != RunState::Prelaunch && state_ != RunState::InMigrate) state_ = RunState::Shutdown;
    memory_->write_report(cfg_.memory_report_fd);  // after the vCPUs stopped, before RAM is unmapped
}

std::vector<pid_t> Machine::vcpu_thread_ids() const {
    return vcpus_->thread_ids();
}

RunState Machine::run_state() const {
    std::lock_guard lock(mu_);
    return state_;
}

std::optional<ShutdownRequest> Machine::shutdown_request() const {
    std::lock_guard lock(shutdown_mu_);
    return shutdown_;
}

void Machine::request_shutdown(ShutdownRequest req) {
    {
        std::lock_guard lock(shutdown_mu_);
        if (shutdown_) return;  // the first reason wins
        shutdown_ = std::move(req);
    }
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(shutdown_event_.get(), &one, sizeof(one));
}

}  // namespace ferry
