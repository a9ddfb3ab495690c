// Which pages of a guest RAM region the host has ever backed. A page that was never
// touched reads as zero, so migration's first round skips it without reading it.
// Anonymous memory: /proc/self/pagemap (present or swapped); memfd/hugetlbfs: the
// file's data extents (SEEK_DATA/SEEK_HOLE).
#pragma once

#include <cstdint>
#include <vector>

#include "base/error.hpp"
#include "memory/guest_memory.hpp"

namespace ferry {

// Pages [first, first+count) of the region, one bit each (bit 0 = page `first`, 64
// pages a word); set = may hold data. When the host cannot tell, every bit is set.
std::vector<uint64_t> backed_pages(const MemoryRegion& region, uint64_t first, uint64_t count);

}  // namespace ferry
