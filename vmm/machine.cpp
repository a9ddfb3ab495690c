#include "vmm/machine.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>

#include <future>
#include <set>

#include "base/file.hpp"
#include "base/log.hpp"
#include "base/size.hpp"
#include "devices/platform.hpp"
#include "devices/rtc.hpp"
#include "memory/policy.hpp"
#include "memory/report.hpp"
#include "vmm/boot/linux.hpp"
#include "vmm/boot/acpi.hpp"
#include "vmm/boot/mptable.hpp"
#include "vmm/boot/pvh.hpp"
#include "vmm/kvm_chips.hpp"
#include "vmm/x86.hpp"

namespace ferry {

namespace {
constexpr uint64_t kTssAddr = 0xfffbd000;
constexpr uint64_t kIdentityMapAddr = 0xfffbc000;
constexpr uint16_t kCom1 = 0x3f8;
constexpr uint32_t kCom1Irq = 4;
}  // namespace

namespace {

RegionPolicy zone_policy(const MachineConfig& cfg, uint32_t zone) {
    RegionPolicy p{cfg.thp, cfg.ksm, cfg.numa, cfg.prealloc};
    if (zone < cfg.zones.size() && cfg.zones[zone].numa.mode != NumaMode::Default) p.numa = cfg.zones[zone].numa;
    return p;
}

}  // namespace

// Guest RAM and its policy, region by region, before KVM sees any of it (STYLE.md
// §2): check the host nodes, map, then THP, NUMA, KSM and preallocation per region.
Result<GuestMemory> Machine::create_guest_memory(const MachineConfig& cfg) {
    std::vector<uint64_t> zone_sizes;
    for (const auto& z : cfg.zones) zone_sizes.push_back(z.size);
    if (zone_sizes.empty()) zone_sizes.push_back(cfg.mem_size);
    uint64_t zones_total = 0;
    for (uint64_t z : zone_sizes) zones_total += z;
    if (zones_total != cfg.mem_size)
        return fail_config(ConfigItem::Mem, fmt::format("{}: the memory zones add up to {}", format_size(cfg.mem_size), format_size(zones_total)));
    for (uint32_t z = 0; z < zone_sizes.size(); ++z) {
        if (auto ok = check_numa_nodes(zone_policy(cfg, z).numa); !ok) return std::unexpected(ok.error());
    }
    auto mem = GuestMemory::create(zone_sizes, cfg.backend);
    if (!mem) return std::unexpected(mem.error());
    auto where = [](const MemoryRegion& r, const Error& e) {
        if (e.item != ConfigItem::None)  // the item's name leads: the region goes last
            return std::unexpected(Error{e.domain, e.err, fmt::format("{} (guest RAM at {:#x}, {})", e.context, r.start.raw(), format_size(r.size())), e.item});
        return fail(e.domain, fmt::format("guest RAM at {:#x} ({}): {}", r.start.raw(), format_size(r.size()), e.context), e.err);
    };
    for (const auto& r : mem->regions()) {
        RegionPolicy p = zone_policy(cfg, r.zone);
        if (auto ok = apply_thp(r.map, p.thp); !ok) return where(r, ok.error());
        if (auto ok = apply_numa(r.map, p.numa); !ok) return where(r, ok.error());
        if (auto ok = apply_ksm(r.map, p.ksm); !ok) return where(r, ok.error());
        if (auto ok = mem->record_policy(r.slot, p); !ok) return std::unexpected(ok.error());
    }
    // Only once every step succeeded: host settings that defeat a request.
    std::set<std::string> warned;
    for (const auto& r : mem->regions()) {
        for (const auto& w : host_policy_warnings(r.policy, r.map.backend())) {
            if (!warned.insert(w).second) continue;
            if (cfg.warn) cfg.warn(w);
            else logger("mem")->warn("{}", w);
        }
    }
    if (!cfg.prealloc) return mem;
    uint64_t total = mem->total_size(), done = 0;
    if (cfg.prealloc_progress) cfg.prealloc_progress(0, total);
    for (const auto& r : mem->regions()) {
        auto ok = prealloc(r.map, [&](uint64_t bytes) {
            done += bytes;
            if (cfg.prealloc_progress) cfg.prealloc_progress(done, total);
        });
        if (!ok) return where(r, ok.error());
    }
    return mem;
}

void Machine::write_memory_report() {
    if (cfg_.memory_report_fd < 0 || memory_reported_) return;
    memory_reported_ = true;
    std::string text;
    if (auto rep = memory_report(mem_)) {
        for (const auto& line : format_report(*rep)) text += line + "\n";
    } else {
        text = "ferry: memory: report failed: " + rep.error().message() + "\n";
    }
    [[maybe_unused]] ssize_t n = ::write(cfg_.memory_report_fd, text.data(), text.size());
}

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

Machine::Machine(const MachineConfig& cfg, KvmSystem kvm, Vm vm, GuestMemory mem, Fd event)
    : cfg_(cfg), kvm_(std::move(kvm)), vm_(std::move(vm)), mem_(std::move(mem)), shutdown_event_(std::move(event)) {}

Machine::~Machine() {
    stop();
    // Device threads may still hold a notification: stop them serving the queues before
    // the members they report to (dirty log, RAM) go away.
    for (auto& v : virtio_) v->device().reset();
}

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
    auto mem = create_guest_memory(cfg);
    if (!mem) return std::unexpected(mem.error());
    Fd event(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!event.valid()) return fail_errno(Domain::Kvm, "eventfd");

    std::unique_ptr<Machine> m(new Machine(cfg, std::move(*kvm), std::move(*vm), std::move(*mem), std::move(event)));
    m->manual_dirty_log_ = manual_dirty;
    if (!cfg.load_kernel) m->state_ = RunState::InMigrate;
    if (int xs = m->vm_.check_extension(KVM_CAP_XSAVE2); xs > 4096) m->xsave_size_ = static_cast<size_t>(xs);
    // KVM builds a memory slot's metadata in time proportional to its size (~4 ms for
    // 256 MiB here): give KVM the RAM on a helper thread while devices, vCPUs and the
    // kernel image are set up (the image is copied into host memory, no KVM needed).
    // The future joins in its destructor on every return path.
    auto slots = std::async(std::launch::async, [&m]() -> Result<void> {
        for (const auto& r : m->mem_.regions()) {
            if (auto ok = m->vm_.set_user_memory_region(r.slot, r.start.raw(), r.size(), r.map.addr()); !ok)
                return fail(Domain::Memory, "KVM refused " + format_size(r.size()) + " of guest RAM: " + ok.error().message());
        }
        return {};
    });
    if (auto ok = m->setup_devices(); !ok) return std::unexpected(ok.error());
    if (auto ok = m->setup_vcpus(); !ok) return std::unexpected(ok.error());
    if (auto ok = m->probe_saveable_msrs(); !ok) return std::unexpected(ok.error());
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

Result<void> Machine::setup_devices() {
    chips_.push_back(std::make_unique<KvmIrqchip>(vm_, KVM_IRQCHIP_PIC_MASTER));
    chips_.push_back(std::make_unique<KvmIrqchip>(vm_, KVM_IRQCHIP_PIC_SLAVE));
    chips_.push_back(std::make_unique<KvmIrqchip>(vm_, KVM_IRQCHIP_IOAPIC));
    chips_.push_back(std::make_unique<KvmPit>(vm_));
    ShutdownFn shutdown = [this](ShutdownRequest r) { request_shutdown(std::move(r)); };
    auto log = logger("dev.serial0");
    serial_ = std::make_shared<Serial>(cfg_.serial_fd, [this, log](bool level) {
        if (auto ok = vm_.irq_line(kCom1Irq, level); !ok) log->debug("{}", ok.error().message());
    });
    if (auto ok = pio_.add(kCom1, 8, serial_); !ok) return ok;
    if (auto ok = pio_.add(kExitPort, 4, std::make_shared<ExitPort>(shutdown)); !ok) return ok;
    if (auto ok = pio_.add(0x60, 5, std::make_shared<I8042>(shutdown)); !ok) return ok;
    // Present with --no-acpi too: a guest that migrated in from a source with ACPI may
    // still power off through it.
    if (auto ok = pio_.add(kAcpiPmPort, 3, std::make_shared<AcpiPm>(shutdown)); !ok) return ok;
    uint64_t low_ram = 0, high_ram = 0;
    for (const auto& r : mem_.regions()) (r.start.raw() < kHighRamStart ? low_ram : high_ram) += r.size();
    rtc_ = std::make_shared<Rtc>(low_ram, high_ram, cfg_.cpus);
    if (auto ok = pio_.add(kRtcPort, 2, rtc_); !ok) return ok;
    return setup_virtio();
}

// One virtio-mmio window per device, disks first. Interrupts go through an irqfd (an
// edge on the IOAPIC pin) and queue notifications come in through ioeventfds on
// QueueNotify, so neither costs an exit to ferry; without those capabilities the
// transport pulses KVM_IRQ_LINE and MMIO writes reach the device through the bus.
Result<void> Machine::setup_virtio() {
    for (const auto& r : mem_.regions()) dev_dirty_.emplace_back((r.size() / 4096 + 63) / 64, 0);
    if (cfg_.disks.size() + cfg_.nets.size() > kMaxVirtioDevices)
        return fail(Domain::Config, fmt::format("at most {} virtio devices (disks and network cards together)", kMaxVirtioDevices));
    for (size_t i = 0; i < cfg_.disks.size(); ++i) {
        auto blk = virtio::Blk::open(fmt::format("blk{}", i), cfg_.disks[i]);
        if (!blk) return std::unexpected(blk.error());
        if (auto ok = add_virtio(*blk); !ok) return ok;
    }
    for (size_t i = 0; i < cfg_.nets.size(); ++i) {
        auto net = virtio::Net::open(fmt::format("net{}", i), cfg_.nets[i]);
        if (!net) return std::unexpected(net.error());
        nets_.push_back(*net);
        if (auto ok = add_virtio(*net); !ok) return ok;
    }
    return {};
}

Result<void> Machine::add_virtio(std::shared_ptr<virtio::VirtioDevice> dev) {
    const size_t n = virtio_.size();
    const uint32_t irq = virtio::kFirstIrq + static_cast<uint32_t>(n);
    const uint64_t base = virtio::kMmioBase + n * virtio::kMmioStride;
    auto log = logger("dev." + dev->id());
    virtio::MmioTransport::IrqFn pulse;
    Fd irqfd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (irqfd.valid() && vm_.check_extension(KVM_CAP_IRQFD) > 0 && vm_.irqfd(irqfd.get(), irq)) {
        pulse = [fd = irqfd.get()] {
            uint64_t one = 1;
            [[maybe_unused]] ssize_t w = ::write(fd, &one, sizeof(one));
        };
        virtio_irqfds_.push_back(std::move(irqfd));
    } else {
        log->debug("no irqfd: interrupts through KVM_IRQ_LINE");
        pulse = [this, irq, log] {
            auto up = vm_.irq_line(irq, true);
            auto down = vm_.irq_line(irq, false);
            if (!up || !down) log->debug("irq {}: {}", irq, (!up ? up : down).error().message());
        };
    }
    if (vm_.check_extension(KVM_CAP_IOEVENTFD) > 0) {
        for (uint16_t q = 0; q < dev->num_queues(); ++q) {
            int fd = dev->notify_fd(q);
            if (fd < 0) continue;
            if (auto ok = vm_.ioeventfd(fd, base + virtio::kRegQueueNotify, 4, q); !ok) log->debug("{}", ok.error().message());
        }
    }
    auto t = std::make_shared<virtio::MmioTransport>(std::move(dev), mem_, std::move(pulse),
                                                     [this](Gpa gpa, uint64_t len) { mark_device_dirty(gpa, len); });
    if (auto ok = mmio_.add(base, virtio::kMmioStride, t); !ok) return ok;
    virtio_.push_back(std::move(t));
    return {};
}

void Machine::mark_device_dirty(Gpa gpa, uint64_t len) {
    if (len == 0) return;
    std::lock_guard lock(dev_dirty_mu_);
    const auto& regions = mem_.regions();
    for (size_t i = 0; i < regions.size() && i < dev_dirty_.size(); ++i) {
        if (!regions[i].contains(gpa)) continue;
        uint64_t first = (gpa.raw() - regions[i].start.raw()) / 4096;
        uint64_t last = std::min(gpa.raw() - regions[i].start.raw() + len - 1, regions[i].size() - 1) / 4096;
        for (uint64_t p = first; p <= last; ++p) dev_dirty_[i][p / 64] |= 1ull << (p % 64);
        return;
    }
}

void Machine::take_device_dirty(std::vector<std::vector<uint64_t>>& bitmaps) {
    std::lock_guard lock(dev_dirty_mu_);
    for (size_t i = 0; i < bitmaps.size() && i < dev_dirty_.size(); ++i) {
        for (size_t w = 0; w < bitmaps[i].size() && w < dev_dirty_[i].size(); ++w) {
            bitmaps[i][w] |= dev_dirty_[i][w];
            dev_dirty_[i][w] = 0;
        }
    }
}

Result<void> Machine::setup_vcpus() {
    auto supported = kvm_.supported_cpuid();
    if (!supported) return std::unexpected(supported.error());
    apply_cpu_model(*supported, cfg_.cpu_model);
    for (uint32_t i = 0; i < cfg_.cpus; ++i) {
        auto vcpu = vm_.create_vcpu(i);
        if (!vcpu) return std::unexpected(vcpu.error());
        if (i == 0) {
            auto khz = (*vcpu)->get_tsc_khz();
            tsc_khz_ = khz ? *khz : 0;
        }
        vcpu_cpuid_.push_back(build_cpuid(*supported, i, cfg_.cpus, tsc_khz_));
        if (auto ok = (*vcpu)->set_cpuid(vcpu_cpuid_.back()); !ok) return ok;
        vcpus_.push_back(std::move(*vcpu));
    }
    auto log = logger("vmm");
    ShutdownFn shutdown = [this](ShutdownRequest r) { request_shutdown(std::move(r)); };
    for (auto& v : vcpus_) threads_.push_back(std::make_unique<VcpuThread>(*v, VcpuContext{&pio_, &mmio_, shutdown, log}));
    return {};
}

// The kernel and initrd files, read once: a reset loads them from memory again.
Result<void> Machine::read_boot_images(BootState& into) const {
    auto kernel = read_file(cfg_.kernel, mem_.total_size(), "kernel");
    if (!kernel) return std::unexpected(kernel.error());
    into.kernel = std::move(*kernel);
    if (cfg_.initrd) {
        auto data = read_file(*cfg_.initrd, mem_.total_size(), "initrd");
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
    const std::string cmdline = device_words ? with_virtio_mmio_devices(boot.cmdline, virtio_.size(), virtio::kMmioBase,
                                                                        virtio::kMmioStride, virtio::kFirstIrq)
                                             : boot.cmdline;
    if (boot.initrd) initrd_span = std::span<const uint8_t>(*boot.initrd);
    // An ELF with a PVH note boots through PVH; a bzImage, or an ELF vmlinux without
    // the note, through the Linux 64-bit boot protocol (vmm/boot/linux.hpp).
    auto where = [&](const Error& e) { return fail(Domain::Loader, "kernel '" + boot.kernel_name + "': " + e.message()); };
    auto format = detect_kernel_format(kernel);
    if (format == KernelFormat::Unknown) return where(Error{Domain::Loader, 0, "not an ELF file or a bzImage"});
    if (auto ok = write_mptable(mem_, cfg_.cpus); !ok) return where(ok.error());
    uint64_t rsdp = 0;
    if (cfg_.acpi) {
        AcpiConfig acpi{cfg_.cpus, {}};
        for (size_t i = 0; i < virtio_.size(); ++i)
            acpi.virtio.push_back({virtio::kMmioBase + i * virtio::kMmioStride, virtio::kFirstIrq + static_cast<uint32_t>(i)});
        auto at = write_acpi_tables(mem_, acpi);
        if (!at) return where(at.error());
        rsdp = *at;
    } else {
        // RAM survives a reset: no RSDP of an earlier boot may be left for a guest to find.
        const std::vector<uint8_t> zeros(kRsdpLength, 0);
        if (auto ok = mem_.write_bytes(Gpa(kAcpiBase), zeros); !ok) return where(ok.error());
    }
    if (format == KernelFormat::PvhElf) {
        auto pvh = load_pvh(mem_, kernel, initrd_span, cmdline, rsdp);
        if (!pvh) return where(pvh.error());
        return setup_pvh_entry(*vcpus_[0], pvh->entry, pvh->start_info);
    }
    auto loaded = format == KernelFormat::BzImage ? load_bzimage(mem_, kernel, initrd_span, cmdline, rsdp)
                                                  : load_vmlinux(mem_, kernel, initrd_span, cmdline, rsdp);
    if (!loaded) return where(loaded.error());
    return setup_linux64_entry(*vcpus_[0], *loaded);
}

Result<void> Machine::start() {
    std::lock_guard lock(mu_);
    if (state_ != RunState::Prelaunch && state_ != RunState::InMigrate) return fail(Domain::Kvm, "machine already started");
    for (auto& t : threads_) {
        if (threads_parked_) t->resume();
        else t->start(false);
    }
    state_ = RunState::Running;
    kick_virtio();
    for (auto& v : virtio_) v->resignal();
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
    for (auto& t : threads_) t->start(true);
    threads_parked_ = true;
}

void Machine::pause() {
    std::lock_guard lock(mu_);
    if (state_ != RunState::Running) return;
    for (auto& t : threads_) t->pause();
    // No vCPU can notify now: complete every request, so RAM holds its results
    // before migration's last round and nothing is in flight when state is saved.
    for (auto& v : virtio_) v->drain();
    state_ = RunState::Paused;
}

void Machine::request_pause() {
    // Not under mu_: pause() may hold it, waiting for these very threads.
    for (auto& t : threads_) t->request_pause();
}

void Machine::resume() {
    std::lock_guard lock(mu_);
    if (state_ != RunState::Paused) return;
    for (auto& t : threads_) t->resume();
    state_ = RunState::Running;
    kick_virtio();
}

// Restored devices wait for a notification before they look at their rings (guest
// RAM may still be arriving); a running guest's devices may look at any time.
void Machine::kick_virtio() {
    for (auto& v : virtio_) v->device().resume();  // after a drain (pause, migration, reset)
    for (auto& v : virtio_)
        for (uint16_t q = 0; q < v->device().num_queues(); ++q) v->device().notify(q);
}

Result<size_t> Machine::announce(const virtio::AnnounceParams& p, const std::vector<std::string>& ids) {
    if (auto ok = virtio::check_announce(p); !ok) return std::unexpected(ok.error());
    std::vector<virtio::Net*> nets;
    for (const auto& n : nets_)
        if (ids.empty() || std::ranges::find(ids, n->id()) != ids.end()) nets.push_back(n.get());
    for (const auto& id : ids)
        if (std::ranges::none_of(nets, [&](auto* n) { return n->id() == id; }))
            return fail(Domain::Config, fmt::format("announce: '{}' is not a network card of this guest", id));
    for (auto* n : nets) n->announce(p);
    return nets.size();
}

bool Machine::pause_for_migration() {
    std::lock_guard lock(mu_);
    bool was_running = state_ == RunState::Running;
    if (was_running) {
        for (auto& t : threads_) t->pause();
        for (auto& v : virtio_) v->drain();  // as pause(): nothing in flight when state is saved
    }
    if (was_running || state_ == RunState::Paused) state_ = RunState::FinishMigrate;
    return was_running;
}

void Machine::end_migration_pause(bool resume) {
    std::lock_guard lock(mu_);
    if (state_ != RunState::FinishMigrate) return;
    state_ = RunState::Paused;
    if (!resume) return;
    for (auto& t : threads_) t->resume();
    state_ = RunState::Running;
    kick_virtio();
}

void Machine::set_postmigrate() {
    std::lock_guard lock(mu_);
    if (state_ == RunState::Paused || state_ == RunState::FinishMigrate) state_ = RunState::PostMigrate;
}

void Machine::stop() {
    std::lock_guard lock(mu_);
    if (serial_) serial_->abandon_output();  // a vCPU blocked on a stalled console must see the stop
    for (auto& t : threads_) t->stop();
    if (state_ != RunState::Prelaunch && state_ != RunState::InMigrate) state_ = RunState::Shutdown;
    write_memory_report();  // after the vCPUs stopped, before RAM is unmapped
}

std::vector<pid_t> Machine::vcpu_thread_ids() const {
    std::vector<pid_t> ids;
    for (const auto& t : threads_) ids.push_back(t->tid());
    return ids;
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
