// Userfault: the owner of one userfaultfd (missing-page faults on guest RAM, for the
// postcopy destination). It opens the fd (the userfaultfd(2) syscall, else
// /dev/userfaultfd), agrees on the API and the features it needs, registers ranges
// for MISSING faults and places pages (UFFDIO_COPY, UFFDIO_ZEROPAGE), each of which
// wakes the threads waiting on that page: vCPUs inside KVM_RUN as well as this
// process's own device threads. Reading the fault events is its user's job (one fault
// thread: migration/postcopy_incoming.hpp).
//
// FERRY_TEST_DENY_USERFAULTFD=1 makes open() fail as a host without userfaultfd
// would (EPERM): the tests use it to check that postcopy is refused cleanly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "memory/mmap_region.hpp"

namespace ferry {

class Userfault {
public:
    // Opens a userfaultfd able to serve `backend` memory (anonymous; shmem for memfd,
    // UFFD_FEATURE_MISSING_SHMEM; hugetlbfs, UFFD_FEATURE_MISSING_HUGETLBFS), asking for
    // the faulting thread's id where the kernel has it. The error says what is missing.
    // FERRY_TEST_UFFD_HIDE_FEATURES=hex hides features from it (tests of the refusal).
    static Result<Userfault> open(Backend backend);

    Result<void> register_missing(uint8_t* addr, uint64_t len);
    Result<void> unregister(uint8_t* addr, uint64_t len);
    // Places `len` bytes (whole pages) at `dst` atomically and wakes its waiters.
    // A page that is already there fails (EEXIST).
    Result<void> copy(uint8_t* dst, const uint8_t* src, uint64_t len);
    // Zeros (UFFDIO_ZEROPAGE; where the memory has none, as hugetlbfs, a copy of zeros).
    Result<void> zeropage(uint8_t* dst, uint64_t len);
    Result<void> wake(uint8_t* addr, uint64_t len);

    int fd() const { return fd_.get(); }
    bool has_thread_id() const { return thread_id_; }

private:
    Userfault(Fd fd, bool thread_id) : fd_(std::move(fd)), thread_id_(thread_id) {}
    Fd fd_;
    bool thread_id_;
    bool has_zeropage_ = true;
    std::vector<uint8_t> zeros_;
};

}  // namespace ferry
