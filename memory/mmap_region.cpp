#include "memory/mmap_region.hpp"

#include <linux/memfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

#include "base/size.hpp"

namespace ferry {

const char* backend_name(Backend b) {
    switch (b) {
        case Backend::Anonymous: return "anon";
        case Backend::Memfd: return "memfd";
        case Backend::Hugetlbfs: return "hugetlbfs";
    }
    return "?";
}

std::optional<Backend> parse_backend(const std::string& s) {
    if (s == "anon") return Backend::Anonymous;
    if (s == "memfd") return Backend::Memfd;
    if (s == "hugetlbfs") return Backend::Hugetlbfs;
    return std::nullopt;
}

namespace {

// Reserve size + 4 MiB of address space and return a 2 MiB-aligned start inside it
// with a PROT_NONE guard of kGuardSize left on each side; the rest is given back.
// On failure after this, release with unreserve().
Result<uint8_t*> reserve_aligned(uint64_t size) {
    uint64_t span = size + 2 * kHugePageSize;
    void* p = ::mmap(nullptr, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return fail_errno(Domain::Memory, "reserving " + format_size(size) + " of address space");
    auto base = reinterpret_cast<uintptr_t>(p);
    uintptr_t aligned = (base + kGuardSize + kHugePageSize - 1) & ~(kHugePageSize - 1);
    uintptr_t head = aligned - kGuardSize;
    if (head > base) ::munmap(p, head - base);
    uintptr_t tail = aligned + size + kGuardSize;
    uintptr_t span_end = base + span;
    if (span_end > tail) ::munmap(reinterpret_cast<void*>(tail), span_end - tail);
    return reinterpret_cast<uint8_t*>(aligned);
}

void unreserve(uint8_t* aligned, uint64_t size) { ::munmap(aligned - kGuardSize, size + 2 * kGuardSize); }

}  // namespace

Result<MmapRegion> MmapRegion::create(Backend backend, uint64_t size, const std::string& name) {
    if (size == 0 || size % 4096 != 0) return fail(Domain::Memory, "guest RAM size must be a non-zero multiple of 4 KiB");
    if (backend == Backend::Hugetlbfs && size % kHugePageSize != 0)
        return fail(Domain::Memory, "hugetlbfs guest RAM must be a multiple of 2 MiB");
    auto where = reserve_aligned(size);
    if (!where) return std::unexpected(where.error());

    Fd fd(-1);
    int flags = MAP_FIXED;
    if (backend == Backend::Anonymous) {
        flags |= MAP_PRIVATE | MAP_ANONYMOUS;  // accounted: the host refuses what it cannot back
    } else {
        unsigned mfd_flags = MFD_CLOEXEC;
        if (backend == Backend::Hugetlbfs) mfd_flags |= MFD_HUGETLB | MFD_HUGE_2MB;
        fd = Fd(::memfd_create(name.c_str(), mfd_flags));
        if (!fd.valid()) {
            int e = errno;
            unreserve(*where, size);
            return fail(Domain::Memory, std::string("memfd_create for ") + backend_name(backend) + " backend", e);
        }
        if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
            int e = errno;
            unreserve(*where, size);
            return fail(Domain::Memory, "sizing the " + std::string(backend_name(backend)) + " file to " + format_size(size), e);
        }
        flags |= MAP_SHARED;
    }
    void* p = ::mmap(*where, size, PROT_READ | PROT_WRITE, flags, fd.get(), 0);
    if (p == MAP_FAILED) {
        int e = errno;
        unreserve(*where, size);
        if (backend == Backend::Hugetlbfs && e == ENOMEM)
            return fail(Domain::Memory, "not enough free 2 MiB huge pages for " + format_size(size) +
                                            " of guest RAM (reserve them in /proc/sys/vm/nr_hugepages)");
        if (e == ENOMEM)
            return fail(Domain::Memory, "the host cannot provide " + format_size(size) + " of guest RAM (too large a guest RAM size?)", e);
        return fail(Domain::Memory, "mapping " + format_size(size) + " of guest RAM (" + backend_name(backend) + ")", e);
    }
    return MmapRegion(static_cast<uint8_t*>(p), size, true, backend, std::move(fd), kGuardSize);
}

MmapRegion MmapRegion::borrowed(uint8_t* addr, uint64_t size) {
    return MmapRegion(addr, size, false, Backend::Anonymous, Fd(-1), 0);
}

MmapRegion::MmapRegion(MmapRegion&& o) noexcept
    : addr_(std::exchange(o.addr_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      owned_(std::exchange(o.owned_, false)),
      backend_(o.backend_),
      fd_(std::move(o.fd_)),
      guard_(std::exchange(o.guard_, 0)) {}

MmapRegion& MmapRegion::operator=(MmapRegion&& o) noexcept {
    if (this != &o) {
        unmap();
        addr_ = std::exchange(o.addr_, nullptr);
        size_ = std::exchange(o.size_, 0);
        owned_ = std::exchange(o.owned_, false);
        backend_ = o.backend_;
        fd_ = std::move(o.fd_);
        guard_ = std::exchange(o.guard_, 0);
    }
    return *this;
}

MmapRegion::~MmapRegion() { unmap(); }

void MmapRegion::unmap() noexcept {
    if (owned_ && addr_) ::munmap(addr_ - guard_, size_ + 2 * guard_);
    addr_ = nullptr;
    owned_ = false;
}

}  // namespace ferry
