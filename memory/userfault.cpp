#include "memory/userfault.hpp"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fmt/format.h>

namespace ferry {

namespace {
int open_raw() {
    if (const char* deny = std::getenv("FERRY_TEST_DENY_USERFAULTFD"); deny && std::strcmp(deny, "1") == 0) {
        errno = EPERM;
        return -1;
    }
    int fd = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
    if (fd >= 0) return fd;
    int first = errno;
#ifdef USERFAULTFD_IOC_NEW
    // Without the sysctl vm.unprivileged_userfaultfd, /dev/userfaultfd is the way in
    // for a user the administrator gave it to.
    int dev = ::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev >= 0) {
        fd = ::ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
        int e = errno;
        ::close(dev);
        if (fd >= 0) return fd;
        errno = e;
        return -1;
    }
#endif
    errno = first;
    return -1;
}
}  // namespace

namespace {
// The features this kernel's userfaultfd offers (an API handshake with none asked
// for reports them all), less any a test hides (FERRY_TEST_UFFD_HIDE_FEATURES=hex).
Result<uint64_t> supported_features() {
    Fd probe(open_raw());
    if (!probe.valid())
        return fail_errno(Domain::Memory, "userfaultfd is not available to this process (kernel without it, or "
                                          "vm.unprivileged_userfaultfd=0 and no access to /dev/userfaultfd)");
    uffdio_api api{};
    api.api = UFFD_API;
    if (::ioctl(probe.get(), UFFDIO_API, &api) != 0) return fail_errno(Domain::Memory, "UFFDIO_API");
    uint64_t features = api.features;
    if (const char* hide = std::getenv("FERRY_TEST_UFFD_HIDE_FEATURES"))
        features &= ~std::strtoull(hide, nullptr, 16);
    return features;
}
}  // namespace

Result<Userfault> Userfault::open(Backend backend) {
    auto have = supported_features();
    if (!have) return std::unexpected(have.error());
    uint64_t want = 0;
    if (backend == Backend::Memfd) {
        if (!(*have & UFFD_FEATURE_MISSING_SHMEM))
            return fail(Domain::Memory, "this kernel's userfaultfd cannot serve memfd-backed RAM (no UFFD_FEATURE_MISSING_SHMEM)");
        want |= UFFD_FEATURE_MISSING_SHMEM;
    }
    if (backend == Backend::Hugetlbfs) {
        if (!(*have & UFFD_FEATURE_MISSING_HUGETLBFS))
            return fail(Domain::Memory, "this kernel's userfaultfd cannot serve hugetlbfs-backed RAM (no UFFD_FEATURE_MISSING_HUGETLBFS)");
        want |= UFFD_FEATURE_MISSING_HUGETLBFS;
    }
    want |= *have & UFFD_FEATURE_THREAD_ID;  // optional: per-vCPU blocktime
    Fd fd(open_raw());
    if (!fd.valid()) return fail_errno(Domain::Memory, "userfaultfd");
    uffdio_api api{};
    api.api = UFFD_API;
    api.features = want;
    if (::ioctl(fd.get(), UFFDIO_API, &api) != 0) return fail_errno(Domain::Memory, "UFFDIO_API");
    return Userfault(std::move(fd), (want & UFFD_FEATURE_THREAD_ID) != 0);
}

Result<void> Userfault::register_missing(uint8_t* addr, uint64_t len) {
    uffdio_register reg{};
    reg.range.start = reinterpret_cast<uint64_t>(addr);
    reg.range.len = len;
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (::ioctl(fd_.get(), UFFDIO_REGISTER, &reg) != 0) return fail_errno(Domain::Memory, "UFFDIO_REGISTER");
    const uint64_t need = (1ull << _UFFDIO_COPY) | (1ull << _UFFDIO_WAKE);
    if ((reg.ioctls & need) != need) {
        (void)unregister(addr, len);
        return fail(Domain::Memory, fmt::format("userfaultfd on this memory lacks UFFDIO_COPY/WAKE (ioctls {:#x})", reg.ioctls));
    }
    // hugetlbfs has no UFFDIO_ZEROPAGE: zeropage() copies zeros there.
    if (!(reg.ioctls & (1ull << _UFFDIO_ZEROPAGE))) has_zeropage_ = false;
    return {};
}

Result<void> Userfault::unregister(uint8_t* addr, uint64_t len) {
    uffdio_range r{reinterpret_cast<uint64_t>(addr), len};
    if (::ioctl(fd_.get(), UFFDIO_UNREGISTER, &r) != 0) return fail_errno(Domain::Memory, "UFFDIO_UNREGISTER");
    return {};
}

Result<void> Userfault::copy(uint8_t* dst, const uint8_t* src, uint64_t len) {
    uffdio_copy c{};
    c.dst = reinterpret_cast<uint64_t>(dst);
    c.src = reinterpret_cast<uint64_t>(src);
    c.len = len;
    for (;;) {
        if (::ioctl(fd_.get(), UFFDIO_COPY, &c) == 0) return {};
        if (errno == EAGAIN) {  // the range changed under us (munmap/madvise): retry the rest
            if (c.copy > 0) {
                c.dst += static_cast<uint64_t>(c.copy);
                c.src += static_cast<uint64_t>(c.copy);
                c.len -= static_cast<uint64_t>(c.copy);
            }
            c.copy = 0;
            continue;
        }
        if (errno == EEXIST) return fail(Domain::Memory, fmt::format("UFFDIO_COPY: a page at {} is already present", static_cast<void*>(dst)), EEXIST);
        return fail_errno(Domain::Memory, "UFFDIO_COPY");
    }
}

Result<void> Userfault::zeropage(uint8_t* dst, uint64_t len) {
    if (!has_zeropage_) {
        // Zeros from a buffer the size of the largest page (2 MiB), allocated once.
        if (zeros_.empty()) zeros_.assign(kHugePageSize, 0);
        for (uint64_t off = 0; off < len; off += zeros_.size())
            if (auto ok = copy(dst + off, zeros_.data(), std::min<uint64_t>(zeros_.size(), len - off)); !ok) return ok;
        return {};
    }
    uffdio_zeropage z{};
    z.range.start = reinterpret_cast<uint64_t>(dst);
    z.range.len = len;
    for (;;) {
        if (::ioctl(fd_.get(), UFFDIO_ZEROPAGE, &z) == 0) return {};
        if (errno == EAGAIN) {
            if (z.zeropage > 0) {
                z.range.start += static_cast<uint64_t>(z.zeropage);
                z.range.len -= static_cast<uint64_t>(z.zeropage);
            }
            z.zeropage = 0;
            continue;
        }
        if (errno == EEXIST) return fail(Domain::Memory, fmt::format("UFFDIO_ZEROPAGE: a page at {} is already present", static_cast<void*>(dst)), EEXIST);
        return fail_errno(Domain::Memory, "UFFDIO_ZEROPAGE");
    }
}

Result<void> Userfault::wake(uint8_t* addr, uint64_t len) {
    uffdio_range r{reinterpret_cast<uint64_t>(addr), len};
    if (::ioctl(fd_.get(), UFFDIO_WAKE, &r) != 0) return fail_errno(Domain::Memory, "UFFDIO_WAKE");
    return {};
}

}  // namespace ferry
