// MmapRegion: RAII owner of one host mapping that backs guest RAM (or a borrowed
// view of someone else's mapping, which it does not unmap). Mappings are aligned to
// 2 MiB in host-virtual space so that transparent huge pages can back them.
//
//   [guard 4 KiB PROT_NONE][ guest RAM, 2 MiB aligned, size bytes ][guard 4 KiB PROT_NONE]
//
// The guards, owned with the mapping, keep the kernel from merging guest RAM into a
// neighbouring VMA with the same flags (a MAP_STACK thread stack is VM_NOHUGEPAGE,
// like guest RAM with --thp off), so per-VMA figures (smaps, numa_maps) describe
// exactly one region, and they catch overruns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "base/error.hpp"
#include "base/fd.hpp"

namespace ferry {

enum class Backend { Anonymous, Memfd, Hugetlbfs };
const char* backend_name(Backend b);
std::optional<Backend> parse_backend(const std::string& s);

inline constexpr uint64_t kHugePageSize = 2ull << 20;
inline constexpr uint64_t kGuardSize = 4096;

class MmapRegion {
public:
    // A fresh private anonymous mapping (Anonymous), or a shared mapping of a new
    // memfd (Memfd) or of a hugetlbfs-backed memfd (Hugetlbfs), of `size` bytes
    // (a multiple of 4 KiB; of 2 MiB for Hugetlbfs), aligned to 2 MiB.
    static Result<MmapRegion> create(Backend backend, uint64_t size, const std::string& name);
    // A view that does not own the mapping (tests, fuzzers).
    static MmapRegion borrowed(uint8_t* addr, uint64_t size);

    MmapRegion(const MmapRegion&) = delete;
    MmapRegion& operator=(const MmapRegion&) = delete;
    MmapRegion(MmapRegion&& o) noexcept;
    MmapRegion& operator=(MmapRegion&& o) noexcept;
    ~MmapRegion();

    uint8_t* addr() const { return addr_; }
    uint64_t size() const { return size_; }
    Backend backend() const { return backend_; }
    bool owned() const { return owned_; }
    // The memfd behind a Memfd/Hugetlbfs mapping, -1 otherwise.
    int fd() const { return fd_.get(); }

private:
    MmapRegion(uint8_t* addr, uint64_t size, bool owned, Backend backend, Fd fd, uint64_t guard)
        : addr_(addr), size_(size), owned_(owned), backend_(backend), fd_(std::move(fd)), guard_(guard) {}
    void unmap() noexcept;

    uint8_t* addr_;
    uint64_t size_;
    bool owned_;
    Backend backend_;
    Fd fd_;
    uint64_t guard_;  // PROT_NONE bytes owned on each side (0 for borrowed views)
};

}  // namespace ferry
