// Memory policy steps run on each guest RAM region before KVM sees it (STYLE.md §2).
// Each step is explicit and fallible; Machine::create runs them in this order:
//
//   apply_thp   MADV_HUGEPAGE / MADV_NOHUGEPAGE        (anon, memfd; hugetlbfs is huge already)
//   apply_numa  mbind                                  (memory/numa.hpp)
//   apply_ksm   MADV_MERGEABLE when on; nothing when off (anonymous memory only)
//   prealloc    MADV_POPULATE_WRITE                    (memory/prealloc.hpp)
//
// ferry never changes host-wide settings (/sys/kernel/mm/...): it reads them to warn
// when a request cannot be met (host_policy_warnings) and to report (memory/report.hpp).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "memory/mmap_region.hpp"
#include "memory/numa.hpp"

namespace ferry {

// What one region asked for; GuestMemory records it per region once applied.
struct RegionPolicy {
    bool thp = true;
    bool ksm = false;
    NumaPolicy numa;
    bool prealloc = false;

    bool operator==(const RegionPolicy&) const = default;
};

// MADV_HUGEPAGE (on) or MADV_NOHUGEPAGE (off) over the whole region.
Result<void> apply_thp(const MmapRegion& region, bool on);

// on: MADV_MERGEABLE over the region (private anonymous memory only: KSM does not
// merge shared or hugetlb mappings, so asking for it there is an error). off: nothing.
Result<void> apply_ksm(const MmapRegion& region, bool on);

// MADV_COLLAPSE: ask for huge pages now (after postcopy, or after THP was off) over
// [offset, offset+len) of the region, widened to whole 2 MiB blocks. Synchronous; on
// EAGAIN/ENOMEM some blocks may stay small (the error says so). No-op on hugetlbfs.
Result<void> collapse_huge_pages(const MmapRegion& region, uint64_t offset, uint64_t len);
inline Result<void> collapse_huge_pages(const MmapRegion& region) { return collapse_huge_pages(region, 0, region.size()); }

// Host-wide state, read from sysfs (nullopt when the file is missing).
// The selected word of /sys/kernel/mm/transparent_hugepage/{enabled,shmem_enabled}.
std::optional<std::string> thp_host_mode();
std::optional<std::string> thp_shmem_host_mode();
// /sys/kernel/mm/ksm/run: 0 stopped, 1 running, 2 unmerging; nullopt: no KSM.
std::optional<int> ksm_run_state();

// One line each (without the "ferry: warning: " prefix) for requests the host will
// not honour as configured: KSM on while ksmd is not running, THP on when the host's
// THP mode is "never" (or shmem THP is off for memfd).
std::vector<std::string> host_policy_warnings(const RegionPolicy& p, Backend backend);

}  // namespace ferry
