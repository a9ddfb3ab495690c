#include "vmm/kvm.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <fmt/format.h>
#include <utility>

namespace ferry {

kvm_cpuid_entry2* CpuidTable::find(uint32_t function, uint32_t index) {
    for (auto& e : entries_) {
        if (e.function != function) continue;
        if ((e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) && e.index != index) continue;
        return &e;
    }
    return nullptr;
}

namespace {

struct RequiredCap {
    long cap;
    const char* name;
};
// What ferry cannot run a guest without.
constexpr RequiredCap kRequiredCaps[] = {
    {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
    {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP (in-kernel interrupt controllers)"},
    {KVM_CAP_PIT2, "KVM_CAP_PIT2"},
    {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
    {KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE"},
    {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
    {KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"},
};

// Variable-length KVM structs (kvm_cpuid2, kvm_msrs, kvm_msr_list). The UAPI
// headers declare their arrays with __DECLARE_FLEX_ARRAY, which in C++ adds an
// empty struct of size 1 and moves the array (and changes sizeof, so the ioctl
// numbers too). ferry lays these buffers out as the kernel's C ABI does: a u32
// count, padding to `header` bytes, then the entries.
template <class Entry>
class ArrayBuf {
public:
    ArrayBuf(size_t n, size_t header) : header_(header), storage_((header + n * sizeof(Entry) + 7) / 8, 0) {
        *count() = static_cast<uint32_t>(n);
    }
    void* get() { return storage_.data(); }
    // SAFETY: storage_ is 8-byte aligned, zeroed, and holds header_ + n entries.
    uint32_t* count() { return reinterpret_cast<uint32_t*>(storage_.data()); }
    Entry* entries() { return reinterpret_cast<Entry*>(reinterpret_cast<uint8_t*>(storage_.data()) + header_); }

private:
    size_t header_;
    std::vector<uint64_t> storage_;
};
struct CArrayHeader {  // kvm_cpuid2 and kvm_msrs as C sees them
    uint32_t n, padding;
};
struct CMsrListHeader {
    uint32_t n;
};
constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, CArrayHeader);
constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, CArrayHeader);
constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, CArrayHeader);
constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, CArrayHeader);
constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, CMsrListHeader);
struct CXsave {  // kvm_xsave as C sees it: 4096 bytes (more with XSAVE2)
    uint32_t region[1024];
};
constexpr unsigned long kGetXsave = _IOR(KVMIO, 0xa4, CXsave);
constexpr unsigned long kSetXsave = _IOW(KVMIO, 0xa5, CXsave);
constexpr unsigned long kGetXsave2 = _IOR(KVMIO, 0xcf, CXsave);

}  // namespace

Result<KvmSystem> KvmSystem::open(const std::string& path) {
    Fd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (!fd.valid()) return fail_errno(Domain::Kvm, "opening " + path);
    int version = ::ioctl(fd.get(), KVM_GET_API_VERSION, 0);
    if (version != KVM_API_VERSION)
        return fail(Domain::Kvm, fmt::format("{}: KVM API version {} (ferry needs {})", path, version, KVM_API_VERSION));
    for (const auto& rc : kRequiredCaps) {
        if (::ioctl(fd.get(), KVM_CHECK_EXTENSION, rc.cap) <= 0)
            return fail(Domain::Kvm, fmt::format("{} lacks {}, which ferry needs", path, rc.name));
    }
    int size = ::ioctl(fd.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
    if (size < static_cast<int>(sizeof(kvm_run))) return fail_errno(Domain::Kvm, "KVM_GET_VCPU_MMAP_SIZE");
    return KvmSystem(std::move(fd), static_cast<size_t>(size));
}

int KvmSystem::check_extension(long cap) const { return ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, cap); }

Result<CpuidTable> KvmSystem::supported_cpuid() const {
    for (size_t n = 64; n <= 4096; n *= 2) {
        ArrayBuf<kvm_cpuid_entry2> buf(n, sizeof(CArrayHeader));
        if (::ioctl(fd_.get(), kGetSupportedCpuid, buf.get()) == 0) {
            std::vector<kvm_cpuid_entry2> e(buf.entries(), buf.entries() + std::min<size_t>(*buf.count(), n));
            return CpuidTable(std::move(e));
        }
        if (errno != E2BIG) return fail_errno(Domain::Kvm, "KVM_GET_SUPPORTED_CPUID");
    }
    return fail(Domain::Kvm, "KVM_GET_SUPPORTED_CPUID: table too large");
}

Result<std::vector<uint32_t>> KvmSystem::msr_index_list() const {
    CMsrListHeader probe{0};
    if (::ioctl(fd_.get(), kGetMsrIndexList, &probe) != 0 && errno != E2BIG)
        return fail_errno(Domain::Kvm, "KVM_GET_MSR_INDEX_LIST");
    ArrayBuf<uint32_t> buf(probe.n, sizeof(CMsrListHeader));
    if (::ioctl(fd_.get(), kGetMsrIndexList, buf.get()) != 0) return fail_errno(Domain::Kvm, "KVM_GET_MSR_INDEX_LIST");
    return std::vector<uint32_t>(buf.entries(), buf.entries() + std::min<size_t>(*buf.count(), probe.n));
}

KvmRunMapping::KvmRunMapping(KvmRunMapping&& o) noexcept
    : run_(std::exchange(o.run_, nullptr)), size_(std::exchange(o.size_, 0)) {}

KvmRunMapping::~KvmRunMapping() {
    if (run_) ::munmap(run_, size_);
}

int Vcpu::run() { return ::ioctl(fd_.get(), KVM_RUN, 0) == 0 ? 0 : errno; }

#define FERRY_VCPU_GET(name, type, req)                                                \
    Result<type> Vcpu::name() const {                                                  \
        type v{};                                                                      \
        if (::ioctl(fd_.get(), req, &v) != 0) return fail_errno(Domain::Kvm, #req);   \
        return v;                                                                      \
    }
#define FERRY_VCPU_SET(name, type, req)                                                \
    Result<void> Vcpu::name(const type& v) {                                           \
        if (::ioctl(fd_.get(), req, &v) != 0) return fail_errno(Domain::Kvm, #req);   \
        return {};                                                                     \
    }
FERRY_VCPU_GET(get_regs, kvm_regs, KVM_GET_REGS)
FERRY_VCPU_SET(set_regs, kvm_regs, KVM_SET_REGS)
FERRY_VCPU_GET(get_sregs, kvm_sregs, KVM_GET_SREGS)
FERRY_VCPU_SET(set_sregs, kvm_sregs, KVM_SET_SREGS)
FERRY_VCPU_GET(get_fpu, kvm_fpu, KVM_GET_FPU)
FERRY_VCPU_SET(set_fpu, kvm_fpu, KVM_SET_FPU)
FERRY_VCPU_GET(get_lapic, kvm_lapic_state, KVM_GET_LAPIC)
FERRY_VCPU_SET(set_lapic, kvm_lapic_state, KVM_SET_LAPIC)
FERRY_VCPU_GET(get_mp_state, kvm_mp_state, KVM_GET_MP_STATE)
FERRY_VCPU_SET(set_mp_state, kvm_mp_state, KVM_SET_MP_STATE)
FERRY_VCPU_GET(get_sregs2, kvm_sregs2, KVM_GET_SREGS2)
FERRY_VCPU_SET(set_sregs2, kvm_sregs2, KVM_SET_SREGS2)
FERRY_VCPU_GET(get_xcrs, kvm_xcrs, KVM_GET_XCRS)
FERRY_VCPU_SET(set_xcrs, kvm_xcrs, KVM_SET_XCRS)
FERRY_VCPU_GET(get_vcpu_events, kvm_vcpu_events, KVM_GET_VCPU_EVENTS)
FERRY_VCPU_SET(set_vcpu_events, kvm_vcpu_events, KVM_SET_VCPU_EVENTS)
FERRY_VCPU_GET(get_debugregs, kvm_debugregs, KVM_GET_DEBUGREGS)
FERRY_VCPU_SET(set_debugregs, kvm_debugregs, KVM_SET_DEBUGREGS)
#undef FERRY_VCPU_GET
#undef FERRY_VCPU_SET

Result<std::vector<uint8_t>> Vcpu::get_xsave(size_t size) const {
    std::vector<uint8_t> area(std::max<size_t>(size, sizeof(CXsave)), 0);
    unsigned long req = size > sizeof(CXsave) ? kGetXsave2 : kGetXsave;
    if (::ioctl(fd_.get(), req, area.data()) != 0) return fail_errno(Domain::Kvm, "KVM_GET_XSAVE");
    return area;
}

Result<void> Vcpu::set_xsave(const std::vector<uint8_t>& area) {
    if (area.size() < sizeof(CXsave)) return fail(Domain::Kvm, "KVM_SET_XSAVE: area too small");
    if (::ioctl(fd_.get(), kSetXsave, area.data()) != 0) return fail_errno(Domain::Kvm, "KVM_SET_XSAVE");
    return {};
}

Result<void> Vcpu::set_cpuid(const CpuidTable& t) {
    ArrayBuf<kvm_cpuid_entry2> buf(t.entries().size(), sizeof(CArrayHeader));
    std::memcpy(buf.entries(), t.entries().data(), t.entries().size() * sizeof(kvm_cpuid_entry2));
    if (::ioctl(fd_.get(), kSetCpuid2, buf.get()) != 0) return fail_errno(Domain::Kvm, "KVM_SET_CPUID2");
    return {};
}

Result<size_t> Vcpu::get_msrs(std::vector<kvm_msr_entry>& entries) const {
    ArrayBuf<kvm_msr_entry> buf(entries.size(), sizeof(CArrayHeader));
    std::memcpy(buf.entries(), entries.data(), entries.size() * sizeof(kvm_msr_entry));
    int n = ::ioctl(fd_.get(), kGetMsrs, buf.get());
    if (n < 0) return fail_errno(Domain::Kvm, "KVM_GET_MSRS");
    std::memcpy(entries.data(), buf.entries(), entries.size() * sizeof(kvm_msr_entry));
    return static_cast<size_t>(n);
}

Result<size_t> Vcpu::set_msrs(const std::vector<kvm_msr_entry>& entries) {
    ArrayBuf<kvm_msr_entry> buf(entries.size(), sizeof(CArrayHeader));
    std::memcpy(buf.entries(), entries.data(), entries.size() * sizeof(kvm_msr_entry));
    int n = ::ioctl(fd_.get(), kSetMsrs, buf.get());
    if (n < 0) return fail_errno(Domain::Kvm, "KVM_SET_MSRS");
    return static_cast<size_t>(n);
}

Result<void> Vcpu::set_tsc_khz(uint32_t khz) {
    if (::ioctl(fd_.get(), KVM_SET_TSC_KHZ, static_cast<unsigned long>(khz)) != 0)
        return fail_errno(Domain::Kvm, fmt::format("KVM_SET_TSC_KHZ {}", khz));
    return {};
}

Result<uint32_t> Vcpu::get_tsc_khz() const {
    int r = ::ioctl(fd_.get(), KVM_GET_TSC_KHZ, 0);
    if (r <= 0) return fail_errno(Domain::Kvm, "KVM_GET_TSC_KHZ");
    return static_cast<uint32_t>(r);
}

Result<Vm> Vm::create(const KvmSystem& kvm) {
    int fd = -1;
    // KVM_CREATE_VM can fail with EINTR under signal pressure; retry then.
    do {
        fd = ::ioctl(kvm.fd(), KVM_CREATE_VM, 0);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return fail_errno(Domain::Kvm, "KVM_CREATE_VM");
    return Vm(Fd(fd), kvm.vcpu_mmap_size());
}

int Vm::check_extension(long cap) const { return ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, cap); }

Result<void> Vm::enable_cap(uint32_t cap, uint64_t arg0) {
    kvm_enable_cap c{};
    c.cap = cap;
    c.args[0] = arg0;
    if (::ioctl(fd_.get(), KVM_ENABLE_CAP, &c) != 0) return fail_errno(Domain::Kvm, fmt::format("KVM_ENABLE_CAP {}", cap));
    return {};
}

Result<void> Vm::get_dirty_log(uint32_t slot, uint64_t* bitmap) {
    kvm_dirty_log log{};
    log.slot = slot;
    log.dirty_bitmap = bitmap;
    if (::ioctl(fd_.get(), KVM_GET_DIRTY_LOG, &log) != 0) return fail_errno(Domain::Kvm, fmt::format("KVM_GET_DIRTY_LOG slot {}", slot));
    return {};
}

Result<void> Vm::clear_dirty_log(uint32_t slot, uint64_t first, uint32_t count, uint64_t* bitmap) {
    kvm_clear_dirty_log c{};
    c.slot = slot;
    c.first_page = first;
    c.num_pages = count;
    c.dirty_bitmap = bitmap;
    if (::ioctl(fd_.get(), KVM_CLEAR_DIRTY_LOG, &c) != 0)
        return fail_errno(Domain::Kvm, fmt::format("KVM_CLEAR_DIRTY_LOG slot {} pages {:#x}+{:#x}", slot, first, count));
    return {};
}

Result<kvm_irqchip> Vm::get_irqchip(uint32_t chip_id) const {
    kvm_irqchip chip{};
    chip.chip_id = chip_id;
    if (::ioctl(fd_.get(), KVM_GET_IRQCHIP, &chip) != 0) return fail_errno(Domain::Kvm, fmt::format("KVM_GET_IRQCHIP {}", chip_id));
    return chip;
}

Result<void> Vm::set_irqchip(const kvm_irqchip& chip) {
    if (::ioctl(fd_.get(), KVM_SET_IRQCHIP, &chip) != 0) return fail_errno(Domain::Kvm, fmt::format("KVM_SET_IRQCHIP {}", chip.chip_id));
    return {};
}

Result<kvm_pit_state2> Vm::get_pit2() const {
    kvm_pit_state2 pit{};
    if (::ioctl(fd_.get(), KVM_GET_PIT2, &pit) != 0) return fail_errno(Domain::Kvm, "KVM_GET_PIT2");
    return pit;
}

Result<void> Vm::set_pit2(const kvm_pit_state2& pit) {
    if (::ioctl(fd_.get(), KVM_SET_PIT2, &pit) != 0) return fail_errno(Domain::Kvm, "KVM_SET_PIT2");
    return {};
}

Result<kvm_clock_data> Vm::get_clock() const {
    kvm_clock_data c{};
    if (::ioctl(fd_.get(), KVM_GET_CLOCK, &c) != 0) return fail_errno(Domain::Kvm, "KVM_GET_CLOCK");
    return c;
}

Result<void> Vm::set_clock(const kvm_clock_data& clock) {
    if (::ioctl(fd_.get(), KVM_SET_CLOCK, &clock) != 0) return fail_errno(Domain::Kvm, "KVM_SET_CLOCK");
    return {};
}

Result<void> Vm::set_user_memory_region(uint32_t slot, uint64_t gpa, uint64_t size, void* host, uint32_t flags) {
    kvm_userspace_memory_region r{};
    r.slot = slot;
    r.flags = flags;
    r.guest_phys_addr = gpa;
    r.memory_size = size;
    r.userspace_addr = reinterpret_cast<uint64_t>(host);
    if (::ioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, &r) != 0)
        return fail_errno(Domain::Kvm, fmt::format("KVM_SET_USER_MEMORY_REGION slot {} gpa {:#x} size {:#x}", slot, gpa, size));
    return {};
}

Result<void> Vm::set_tss_addr(uint64_t addr) {
    if (::ioctl(fd_.get(), KVM_SET_TSS_ADDR, static_cast<unsigned long>(addr)) != 0)
        return fail_errno(Domain::Kvm, "KVM_SET_TSS_ADDR");
    return {};
}

Result<void> Vm::set_identity_map_addr(uint64_t addr) {
    if (::ioctl(fd_.get(), KVM_SET_IDENTITY_MAP_ADDR, &addr) != 0) return fail_errno(Domain::Kvm, "KVM_SET_IDENTITY_MAP_ADDR");
    return {};
}

Result<void> Vm::create_irqchip() {
    if (::ioctl(fd_.get(), KVM_CREATE_IRQCHIP, 0) != 0) return fail_errno(Domain::Kvm, "KVM_CREATE_IRQCHIP");
    return {};
}

Result<void> Vm::create_pit2() {
    kvm_pit_config cfg{};
    cfg.flags = KVM_PIT_SPEAKER_DUMMY;
    if (::ioctl(fd_.get(), KVM_CREATE_PIT2, &cfg) != 0) return fail_errno(Domain::Kvm, "KVM_CREATE_PIT2");
    return {};
}

Result<void> Vm::irq_line(uint32_t irq, bool level) {
    kvm_irq_level l{};
    l.irq = irq;
    l.level = level ? 1 : 0;
    if (::ioctl(fd_.get(), KVM_IRQ_LINE, &l) != 0) return fail_errno(Domain::Kvm, fmt::format("KVM_IRQ_LINE {}", irq));
    return {};
}

Result<void> Vm::irqfd(int fd, uint32_t gsi) {
    kvm_irqfd r{};
    r.fd = static_cast<uint32_t>(fd);
    r.gsi = gsi;
    if (::ioctl(fd_.get(), KVM_IRQFD, &r) != 0) return fail_errno(Domain::Kvm, fmt::format("KVM_IRQFD gsi {}", gsi));
    return {};
}

Result<void> Vm::ioeventfd(int fd, uint64_t addr, uint32_t len, uint64_t datamatch) {
    kvm_ioeventfd r{};
    r.datamatch = datamatch;
    r.addr = addr;
    r.len = len;
    r.fd = fd;
    r.flags = KVM_IOEVENTFD_FLAG_DATAMATCH;
    if (::ioctl(fd_.get(), KVM_IOEVENTFD, &r) != 0) return fail_errno(Domain::Kvm, fmt::format("KVM_IOEVENTFD {:#x}", addr));
    return {};
}

Result<std::unique_ptr<Vcpu>> Vm::create_vcpu(uint32_t id) {
    Fd fd(::ioctl(fd_.get(), KVM_CREATE_VCPU, static_cast<unsigned long>(id)));
    if (!fd.valid()) return fail_errno(Domain::Kvm, fmt::format("KVM_CREATE_VCPU {}", id));
    void* p = ::mmap(nullptr, vcpu_mmap_size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (p == MAP_FAILED) return fail_errno(Domain::Kvm, fmt::format("mapping kvm_run of vCPU {}", id));
    // SAFETY: KVM maps a struct kvm_run at offset 0 of the vCPU fd.
    KvmRunMapping run(static_cast<kvm_run*>(p), vcpu_mmap_size_);
    return std::unique_ptr<Vcpu>(new Vcpu(id, std::move(fd), std::move(run)));
}

}  // namespace ferry
