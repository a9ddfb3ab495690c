// What the host actually gave guest RAM, per region: figures read back from the
// kernel, next to the settings that were requested. Used by `ferry run
// --memory-report` (text lines, format_report) and the QMP command
// `ferry-query-memory` (monitor/memory_json.hpp). docs/memory.md explains each figure.
//
//   figure              source
//   rss_bytes           /proc/self/smaps Rss (+ Shared_Hugetlb + Private_Hugetlb)
//   thp_bytes           /proc/self/smaps AnonHugePages + ShmemPmdMapped + FilePmdMapped
//   hugetlb_bytes       /proc/self/smaps Shared_Hugetlb + Private_Hugetlb
//   ksm_merged_pages    /proc/self/smaps KSM / 4 KiB (per region), or, on kernels
//                       without that field, /proc/self/ksm_merging_pages (whole process)
//   numa_policy         get_mempolicy(MPOL_F_ADDR) at the region's first byte
//   pages_per_node      move_pages(2) query of sampled pages (exact up to 256 MiB)
//
// smaps is per VMA: the figures of a VMA that lies wholly inside the region are
// exact; a VMA shared with neighbouring memory is apportioned by size and the
// region says smaps_exact = false.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.hpp"
#include "memory/guest_memory.hpp"

namespace ferry {

struct RegionReport {
    uint32_t slot = 0;
    uint32_t zone = 0;
    Gpa gpa;
    uint64_t size = 0;
    uint64_t hva = 0;  // host-virtual start of the mapping
    Backend backend = Backend::Anonymous;

    bool thp_requested = false;
    uint64_t thp_bytes = 0;      // transparent huge pages mapped (PMD) in the range
    uint64_t hugetlb_bytes = 0;  // hugetlbfs pages mapped in the range
    uint64_t rss_bytes = 0;      // resident, huge or not

    bool ksm_requested = false;
    uint64_t ksm_merged_pages = 0;  // see MemoryReport::ksm_source

    bool prealloc_requested = false;

    std::string numa_requested;  // the policy ferry applied ("default", "bind:0", ...)
    std::string numa_policy;     // the policy the kernel holds for the range
    std::map<int, uint64_t> pages_per_node;  // node -> 4 KiB pages (estimated: samples x stride)
    uint64_t numa_sample_stride = 0;         // bytes between sampled pages; 4096 = every page
    uint64_t numa_sampled = 0;
    uint64_t numa_unpopulated = 0;  // sampled pages not present

    bool smaps_exact = true;
};

struct MemoryReport {
    std::vector<RegionReport> regions;
    std::optional<std::string> thp_host_mode;    // /sys/kernel/mm/transparent_hugepage/enabled
    std::optional<std::string> thp_shmem_mode;   // .../shmem_enabled
    std::optional<int> ksm_run;                  // /sys/kernel/mm/ksm/run; nullopt: no KSM
    std::optional<uint64_t> ksm_process_merging_pages;  // /proc/self/ksm_merging_pages
    std::string ksm_source;                      // where ksm_merged_pages comes from
    std::vector<std::string> warnings;           // host_policy_warnings for the regions' policies
};

struct ReportOptions {
    uint64_t max_node_samples = 65536;  // per region, for pages_per_node
};

// Reads the figures for every region of `mem` (/proc/self: call it in the process
// that maps guest RAM). Safe while the guest runs.
Result<MemoryReport> memory_report(const GuestMemory& mem, const ReportOptions& opts = {});

// The smaps figures summed over [lo, hi) of host-virtual space, from smaps text.
struct SmapsTotals {
    uint64_t rss = 0, thp = 0, hugetlb = 0, ksm = 0;
    bool has_ksm_field = false;
    unsigned vmas = 0;   // VMAs overlapping the range
    bool exact = true;   // false when one of them extends beyond the range
};
SmapsTotals sum_smaps(std::string_view smaps, uint64_t lo, uint64_t hi);

// One "ferry: memory: ..." line for the host, then one per region (key=value, bytes).
std::vector<std::string> format_report(const MemoryReport& r);

}  // namespace ferry
