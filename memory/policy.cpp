#include "memory/policy.hpp"

#include <sys/mman.h>

namespace ferry {

Result<void> apply_thp(const MmapRegion& region, bool on) {
    if (region.backend() == Backend::Hugetlbfs) return {};  // already huge pages
    if (::madvise(region.addr(), region.size(), on ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) != 0)
        return fail_errno(Domain::Memory, on ? "madvise(MADV_HUGEPAGE) on guest RAM" : "madvise(MADV_NOHUGEPAGE) on guest RAM");
    return {};
}

}  // namespace ferry
