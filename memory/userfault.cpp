#include "memory/userfault.hpp"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

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

Result<Userfault> Userfault::open(Backend backend) {
    if (backend == Backend::Hugetlbfs)
        return fail(Domain::Memory, "postcopy into hugetlbfs-backed RAM is not supported by ferry yet (use --memory-backend anon)");
    if (backend == Backend::Memfd)
        return fail(Domain::Memory, "postcopy into memfd-backed RAM is not supported by ferry yet (use --memory-backend anon)");
    Fd fd(open_raw());
    if (!fd.valid())
        return fail_errno(Domain::Memory, "userfaultfd is not available to this process (kernel without it, or "
                                          "vm.unprivileged_userfaultfd=0 and no access to /dev/userfaultfd)");
    uffdio_api api{};
    api.api = UFFD_API;
    api.features = UFFD_FEATURE_THREAD_ID;
    if (::ioctl(fd.get(), UFFDIO_API, &api) != 0) {
        // Retry without the optional feature.
        Fd again(open_raw());
        if (!again.valid()) return fail_errno(Domain::Memory, "userfaultfd");
        fd = std::move(again);
        api = {};
        api.api = UFFD_API;
        if (::ioctl(fd.get(), UFFDIO_API, &api) != 0) return fail_errno(Domain::Memory, "UFFDIO_API");
    }
    bool tid = (api.features & UFFD_FEATURE_THREAD_ID) != 0;
    return Userfault(std::move(fd), tid);
}

Result<void> Userfault::register_missing(uint8_t* addr, uint64_t len) {
    uffdio_register reg{};
    reg.range.start = reinterpret_cast<uint64_t>(addr);
    reg.range.len = len;
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (::ioctl(fd_.get(), UFFDIO_REGISTER, &reg) != 0) return fail_errno(Domain::Memory, "UFFDIO_REGISTER");
    const uint64_t need = (1ull << _UFFDIO_COPY) | (1ull << _UFFDIO_ZEROPAGE) | (1ull << _UFFDIO_WAKE);
    if ((reg.ioctls & need) != need) {
        (void)unregister(addr, len);
        return fail(Domain::Memory, fmt::format("userfaultfd on this memory lacks UFFDIO_COPY/ZEROPAGE/WAKE (ioctls {:#x})", reg.ioctls));
    }
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
