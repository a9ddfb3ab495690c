#include "vmm/machine.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <fmt/format.h>

#include "base/file.hpp"
#include "base/log.hpp"
#include "base/size.hpp"
#include "devices/platform.hpp"
#include "memory/policy.hpp"
#include "vmm/boot/pvh.hpp"
#include "vmm/x86.hpp"

namespace ferry {

namespace {
constexpr uint64_t kTssAddr = 0xfffbd000;
constexpr uint64_t kIdentityMapAddr = 0xfffbc000;
constexpr uint16_t kCom1 = 0x3f8;
constexpr uint32_t kCom1Irq = 4;
}  // namespace

const char* run_state_name(RunState s) {
    switch (s) {
        case RunState::Prelaunch: return "prelaunch";
        case RunState::Running: return "running";
        case RunState::Paused: return "paused";
        case RunState::Shutdown: return "shutdown";
    }
    return "?";
}

Machine::Machine(const MachineConfig& cfg, KvmSystem kvm, Vm vm, GuestMemory mem, Fd event)
    : cfg_(cfg), kvm_(std::move(kvm)), vm_(std::move(vm)), mem_(std::move(mem)), shutdown_event_(std::move(event)) {}

Machine::~Machine() { stop(); }

Result<std::unique_ptr<Machine>> Machine::create(const MachineConfig& cfg) {
    if (cfg.cpus == 0 || cfg.cpus > kMaxCpus) return fail(Domain::Config, fmt::format("--cpus must be 1..{}", kMaxCpus));
    auto kvm = KvmSystem::open();
    if (!kvm) return std::unexpected(kvm.error());
    auto vm = Vm::create(*kvm);
    if (!vm) return std::unexpected(vm.error());
    if (auto ok = vm->set_tss_addr(kTssAddr); !ok) return std::unexpected(ok.error());
    if (vm->check_extension(KVM_CAP_SET_IDENTITY_MAP_ADDR) > 0) {
        if (auto ok = vm->set_identity_map_addr(kIdentityMapAddr); !ok) return std::unexpected(ok.error());
    }
    if (auto ok = vm->create_irqchip(); !ok) return std::unexpected(ok.error());
    if (auto ok = vm->create_pit2(); !ok) return std::unexpected(ok.error());

    // The RAM's top guest-physical address must fit the host's physical address width.
    if (auto cpuid = kvm->supported_cpuid()) {
        if (auto* leaf = cpuid->find(0x80000008)) {
            uint32_t bits = leaf->eax & 0xff;
            uint64_t top = ram_layout(cfg.mem_size).back().start.raw() + ram_layout(cfg.mem_size).back().size;
            if (bits >= 32 && bits < 64 && top > (1ull << bits))
                return fail(Domain::Config, fmt::format("--mem {} does not fit this host's {}-bit guest-physical address space",
                                                        format_size(cfg.mem_size), bits));
        }
    }
    auto mem = GuestMemory::create(cfg.mem_size, cfg.backend);
    if (!mem) return std::unexpected(mem.error());
    for (const auto& r : mem->regions()) {
        if (auto ok = apply_thp(r.map, cfg.thp); !ok) return std::unexpected(ok.error());
        if (auto ok = vm->set_user_memory_region(r.slot, r.start.raw(), r.size(), r.map.addr()); !ok)
            return fail(Domain::Memory, "KVM refused " + format_size(r.size()) + " of guest RAM: " + ok.error().message());
    }
    Fd event(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!event.valid()) return fail_errno(Domain::Kvm, "eventfd");

    std::unique_ptr<Machine> m(new Machine(cfg, std::move(*kvm), std::move(*vm), std::move(*mem), std::move(event)));
    if (auto ok = m->setup_devices(); !ok) return std::unexpected(ok.error());
    if (auto ok = m->setup_vcpus(); !ok) return std::unexpected(ok.error());
    if (auto ok = m->load_kernel(); !ok) return std::unexpected(ok.error());
    return m;
}

Result<void> Machine::setup_devices() {
    ShutdownFn shutdown = [this](ShutdownRequest r) { request_shutdown(std::move(r)); };
    auto log = logger("dev.serial0");
    serial_ = std::make_shared<Serial>(cfg_.serial_fd, [this, log](bool level) {
        if (auto ok = vm_.irq_line(kCom1Irq, level); !ok) log->debug("{}", ok.error().message());
    });
    if (auto ok = pio_.add(kCom1, 8, serial_); !ok) return ok;
    if (auto ok = pio_.add(kExitPort, 4, std::make_shared<ExitPort>(shutdown)); !ok) return ok;
    if (auto ok = pio_.add(0x60, 5, std::make_shared<I8042>(shutdown)); !ok) return ok;
    return {};
}

Result<void> Machine::setup_vcpus() {
    auto supported = kvm_.supported_cpuid();
    if (!supported) return std::unexpected(supported.error());
    for (uint32_t i = 0; i < cfg_.cpus; ++i) {
        auto vcpu = vm_.create_vcpu(i);
        if (!vcpu) return std::unexpected(vcpu.error());
        if (i == 0) {
            auto khz = (*vcpu)->get_tsc_khz();
            tsc_khz_ = khz ? *khz : 0;
        }
        if (auto ok = (*vcpu)->set_cpuid(build_cpuid(*supported, i, cfg_.cpus, tsc_khz_)); !ok) return ok;
        vcpus_.push_back(std::move(*vcpu));
    }
    auto log = logger("vmm");
    ShutdownFn shutdown = [this](ShutdownRequest r) { request_shutdown(std::move(r)); };
    for (auto& v : vcpus_) threads_.push_back(std::make_unique<VcpuThread>(*v, VcpuContext{&pio_, &mmio_, shutdown, log}));
    return {};
}

Result<void> Machine::load_kernel() {
    auto kernel = read_file(cfg_.kernel, mem_.total_size(), "kernel");
    if (!kernel) return std::unexpected(kernel.error());
    std::optional<std::vector<uint8_t>> initrd;
    if (cfg_.initrd) {
        auto data = read_file(*cfg_.initrd, mem_.total_size(), "initrd");
        if (!data) return std::unexpected(data.error());
        initrd = std::move(*data);
    }
    std::optional<std::span<const uint8_t>> initrd_span;
    if (initrd) initrd_span = std::span<const uint8_t>(*initrd);
    auto boot = load_pvh(mem_, *kernel, initrd_span, cfg_.cmdline);
    if (!boot) return fail(Domain::Loader, "kernel '" + cfg_.kernel + "': " + boot.error().message());
    return setup_pvh_entry(*vcpus_[0], boot->entry, boot->start_info);
}

Result<void> Machine::start() {
    std::lock_guard lock(mu_);
    if (state_ != RunState::Prelaunch) return fail(Domain::Kvm, "machine already started");
    for (auto& t : threads_) t->start(false);
    state_ = RunState::Running;
    return {};
}

void Machine::pause() {
    std::lock_guard lock(mu_);
    if (state_ != RunState::Running) return;
    for (auto& t : threads_) t->pause();
    state_ = RunState::Paused;
}

void Machine::resume() {
    std::lock_guard lock(mu_);
    if (state_ != RunState::Paused) return;
    for (auto& t : threads_) t->resume();
    state_ = RunState::Running;
}

void Machine::stop() {
    std::lock_guard lock(mu_);
    for (auto& t : threads_) t->stop();
    if (state_ != RunState::Prelaunch) state_ = RunState::Shutdown;
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
