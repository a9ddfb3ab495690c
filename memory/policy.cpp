#include "memory/policy.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <fmt/format.h>
#include <fstream>

#include "base/size.hpp"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

namespace ferry {

namespace {

std::optional<std::string> read_first_line(const char* path) {
    std::ifstream f(path);
    std::string line;
    if (!f || !std::getline(f, line)) return std::nullopt;
    return line;
}

// "always [madvise] never" -> "madvise"
std::optional<std::string> selected_word(const char* path) {
    auto line = read_first_line(path);
    if (!line) return std::nullopt;
    auto open = line->find('[');
    auto close = line->find(']', open);
    if (open == std::string::npos || close == std::string::npos) return *line;
    return line->substr(open + 1, close - open - 1);
}

}  // namespace

Result<void> apply_thp(const MmapRegion& region, bool on) {
    if (region.backend() == Backend::Hugetlbfs) return {};  // already huge pages
    if (::madvise(region.addr(), region.size(), on ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) != 0)
        return fail_errno(Domain::Memory, on ? "madvise(MADV_HUGEPAGE) on guest RAM" : "madvise(MADV_NOHUGEPAGE) on guest RAM");
    return {};
}

Result<void> apply_ksm(const MmapRegion& region, bool on) {
    if (!on) return {};
    if (region.backend() != Backend::Anonymous)
        return fail_config(ConfigItem::Ksm, fmt::format("on: KSM merges only private anonymous memory (the anon memory backend), not {}",
                                                        backend_name(region.backend())));
    if (::madvise(region.addr(), region.size(), MADV_MERGEABLE) != 0) {
        int e = errno;
        if (e == EINVAL) return fail_config(ConfigItem::Ksm, "on: this kernel has no KSM (madvise MADV_MERGEABLE refused)", e);
        return fail(Domain::Memory, "madvise(MADV_MERGEABLE) on guest RAM", e);
    }
    return {};
}

Result<void> collapse_huge_pages(const MmapRegion& region, uint64_t offset, uint64_t len) {
    if (region.backend() == Backend::Hugetlbfs || len == 0) return {};
    if (offset >= region.size() || len > region.size() - offset)
        return fail(Domain::Memory, fmt::format("collapse range {:#x}+{:#x} is outside the region of {:#x} bytes", offset, len, region.size()));
    uint64_t start = offset & ~(kHugePageSize - 1);
    uint64_t end = std::min(region.size(), (offset + len + kHugePageSize - 1) & ~(kHugePageSize - 1));
    if (::madvise(region.addr() + start, end - start, MADV_COLLAPSE) != 0) {
        int e = errno;
        if (e == EINVAL) return fail(Domain::Memory, "MADV_COLLAPSE is not supported by this kernel (or THP is disabled)", e);
        return fail(Domain::Memory, fmt::format("MADV_COLLAPSE over {:#x}+{:#x} of guest RAM (some blocks may remain 4 KiB pages)",
                                                start, end - start), e);
    }
    return {};
}

std::optional<std::string> thp_host_mode() { return selected_word("/sys/kernel/mm/transparent_hugepage/enabled"); }
std::optional<std::string> thp_shmem_host_mode() { return selected_word("/sys/kernel/mm/transparent_hugepage/shmem_enabled"); }

std::optional<int> ksm_run_state() {
    auto line = read_first_line("/sys/kernel/mm/ksm/run");
    if (!line) return std::nullopt;
    try {
        return std::stoi(*line);
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

std::vector<std::string> host_policy_warnings(const RegionPolicy& p, Backend backend) {
    std::vector<std::string> out;
    if (p.ksm) {
        auto run = ksm_run_state();
        if (!run)
            out.push_back("KSM is on, but this kernel has no KSM (/sys/kernel/mm/ksm is missing): nothing will be merged");
        else if (*run != 1)
            out.push_back(fmt::format("KSM is on, but ksmd is not running (/sys/kernel/mm/ksm/run is {}): guest RAM is "
                                      "mergeable, nothing is merged until the host enables KSM",
                                      *run));
    }
    if (p.thp && backend == Backend::Anonymous) {
        if (auto mode = thp_host_mode(); mode && *mode == "never")
            out.push_back("THP is on, but the host's THP mode is 'never' (/sys/kernel/mm/transparent_hugepage/enabled): "
                          "guest RAM gets 4 KiB pages");
    }
    if (p.thp && backend == Backend::Memfd) {
        if (auto mode = thp_shmem_host_mode(); mode && (*mode == "never" || *mode == "deny"))
            out.push_back(fmt::format("THP is on with the memfd backend, but shmem THP is '{}' "
                                      "(/sys/kernel/mm/transparent_hugepage/shmem_enabled): guest RAM gets 4 KiB pages",
                                      *mode));
    }
    return out;
}

}  // namespace ferry
