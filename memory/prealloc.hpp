// Preallocation of guest RAM before boot: MADV_POPULATE_WRITE in chunks, so the
// guest's first touch of a page finds it already allocated (and, with THP or
// hugetlbfs, already huge), with progress reported per chunk.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "base/error.hpp"
#include "memory/mmap_region.hpp"

namespace ferry {

inline constexpr uint64_t kPreallocChunk = 64ull << 20;

// Called after each chunk with the bytes just populated.
using PreallocChunkFn = std::function<void(uint64_t bytes)>;

// Populates the whole region writable. Must run before anything is written to the
// region (the fallback for kernels without MADV_POPULATE_WRITE, < 5.14, writes to
// each page). ENOMEM (host or hugetlb pool exhausted) is an error naming how far it got.
Result<void> prealloc(const MmapRegion& region, const PreallocChunkFn& on_chunk = {});

// Progress over a whole guest: (bytes done so far, total bytes).
using PreallocProgressFn = std::function<void(uint64_t done, uint64_t total)>;
// A printer for stderr-like fds: on a tty one line "ferry: preallocating 4 GiB of
// guest RAM: 37%" rewritten in place; otherwise a line at 0/25/50/75/100%. The last
// call (done == total) ends the line and adds the elapsed time.
PreallocProgressFn prealloc_progress_printer(int fd);

}  // namespace ferry
