// Memory policy steps run on each guest RAM region before KVM sees it. Each step is
// explicit and fallible.
#pragma once

#include "base/error.hpp"
#include "memory/mmap_region.hpp"

namespace ferry {

// MADV_HUGEPAGE (on) or MADV_NOHUGEPAGE (off) over the whole region.
Result<void> apply_thp(const MmapRegion& region, bool on);

}  // namespace ferry
