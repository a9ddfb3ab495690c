#include "memory/report.hpp"

#include <algorithm>
#include <charconv>
#include <fmt/format.h>
#include <fstream>
#include <set>
#include <sstream>

#include "memory/numa.hpp"
#include "memory/policy.hpp"

namespace ferry {

namespace {

constexpr uint64_t kPage = 4096;

std::optional<uint64_t> parse_hex(std::string_view s) {
    uint64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 16);
    if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
    return v;
}

// "7f00aa000000-7f00ca000000 rw-p ..." -> [start, end)
std::optional<std::pair<uint64_t, uint64_t>> vma_header(std::string_view line) {
    auto dash = line.find('-');
    auto space = line.find(' ');
    if (dash == std::string_view::npos || space == std::string_view::npos || dash > space) return std::nullopt;
    auto is_lower_hex = [](std::string_view s) {
        return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
    };
    auto a = line.substr(0, dash), b = line.substr(dash + 1, space - dash - 1);
    if (!is_lower_hex(a) || !is_lower_hex(b)) return std::nullopt;
    auto lo = parse_hex(a), hi = parse_hex(b);
    if (!lo || !hi || *hi <= *lo) return std::nullopt;
    return std::pair{*lo, *hi};
}

// "AnonHugePages:      2048 kB" -> ("AnonHugePages", 2048*1024)
std::optional<std::pair<std::string_view, uint64_t>> smaps_field(std::string_view line) {
    auto colon = line.find(':');
    if (colon == std::string_view::npos) return std::nullopt;
    std::string_view rest = line.substr(colon + 1);
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    uint64_t v = 0;
    auto [p, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), v);
    if (ec != std::errc()) return std::nullopt;
    std::string_view unit(p, rest.data() + rest.size() - p);
    if (unit != " kB") return std::nullopt;
    return std::pair{line.substr(0, colon), v * 1024};
}

std::string read_text(const char* path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

std::optional<uint64_t> read_u64(const char* path) {
    std::ifstream f(path);
    uint64_t v = 0;
    if (!(f >> v)) return std::nullopt;
    return v;
}

}  // namespace

SmapsTotals sum_smaps(std::string_view smaps, uint64_t lo, uint64_t hi) {
    SmapsTotals t;
    struct Vma {
        uint64_t start = 0, end = 0;
        uint64_t rss = 0, thp = 0, hugetlb = 0, ksm = 0;
    };
    std::optional<Vma> cur;
    auto finish = [&]() {
        if (!cur) return;
        uint64_t s = std::max(cur->start, lo), e = std::min(cur->end, hi);
        if (s < e) {
            t.vmas++;
            uint64_t overlap = e - s, whole = cur->end - cur->start;
            auto part = [&](uint64_t v) {
                return overlap == whole ? v : static_cast<uint64_t>(static_cast<long double>(v) * overlap / whole);
            };
            if (overlap != whole) t.exact = false;
            t.rss += part(cur->rss);
            t.thp += part(cur->thp);
            t.hugetlb += part(cur->hugetlb);
            t.ksm += part(cur->ksm);
        }
        cur.reset();
    };
    size_t pos = 0;
    while (pos < smaps.size()) {
        size_t nl = smaps.find('\n', pos);
        std::string_view line = smaps.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
        pos = nl == std::string_view::npos ? smaps.size() : nl + 1;
        if (auto h = vma_header(line)) {
            finish();
            cur = Vma{h->first, h->second};
            continue;
        }
        if (!cur) continue;
        auto f = smaps_field(line);
        if (!f) continue;
        auto [key, bytes] = *f;
        if (key == "Rss") cur->rss += bytes;
        else if (key == "AnonHugePages" || key == "ShmemPmdMapped" || key == "FilePmdMapped") cur->thp += bytes;
        else if (key == "Shared_Hugetlb" || key == "Private_Hugetlb") {
            cur->hugetlb += bytes;
            cur->rss += bytes;  // Rss leaves hugetlb pages out
        } else if (key == "KSM") {
            cur->ksm += bytes;
            t.has_ksm_field = true;
        }
    }
    finish();
    return t;
}

Result<MemoryReport> memory_report(const GuestMemory& mem, const ReportOptions& opts) {
    MemoryReport rep;
    rep.thp_host_mode = thp_host_mode();
    rep.thp_shmem_mode = thp_shmem_host_mode();
    rep.ksm_run = ksm_run_state();
    rep.ksm_process_merging_pages = read_u64("/proc/self/ksm_merging_pages");

    std::string smaps = read_text("/proc/self/smaps");
    if (smaps.empty()) return fail(Domain::Memory, "cannot read /proc/self/smaps for the memory report");

    bool any_ksm_field = false;
    std::set<std::string> warnings;
    for (const MemoryRegion& r : mem.regions()) {
        RegionReport rr;
        rr.slot = r.slot;
        rr.zone = r.zone;
        rr.gpa = r.start;
        rr.size = r.size();
        rr.hva = reinterpret_cast<uint64_t>(r.map.addr());
        rr.backend = r.map.backend();
        rr.thp_requested = r.policy.thp && r.map.backend() != Backend::Hugetlbfs;
        rr.ksm_requested = r.policy.ksm;
        rr.prealloc_requested = r.policy.prealloc;
        rr.numa_requested = to_string(r.policy.numa);

        SmapsTotals t = sum_smaps(smaps, rr.hva, rr.hva + rr.size);
        rr.rss_bytes = t.rss;
        rr.thp_bytes = t.thp;
        rr.hugetlb_bytes = t.hugetlb;
        rr.ksm_merged_pages = t.ksm / kPage;
        rr.smaps_exact = t.exact;
        any_ksm_field = any_ksm_field || t.has_ksm_field;

        auto policy = read_numa_policy(r.map.addr());
        if (!policy) return std::unexpected(policy.error());
        rr.numa_policy = to_string(*policy);
        auto sample = sample_page_nodes(r.map.addr(), r.size(), opts.max_node_samples);
        if (!sample) return std::unexpected(sample.error());
        for (auto [node, n] : sample->per_node) rr.pages_per_node[node] = n * (sample->stride / kPage);
        rr.numa_sample_stride = sample->stride;
        rr.numa_sampled = sample->sampled;
        rr.numa_unpopulated = sample->unpopulated;

        for (auto& w : host_policy_warnings(r.policy, r.map.backend())) warnings.insert(w);
        rep.regions.push_back(std::move(rr));
    }
    if (any_ksm_field || !rep.ksm_process_merging_pages) {
        rep.ksm_source = "smaps KSM (per region)";
    } else {
        // Older kernels: only the process-wide count; guest RAM is (nearly) all that
        // ferry marks mergeable, so it is given to the first region that asked for KSM.
        rep.ksm_source = "/proc/self/ksm_merging_pages (whole process)";
        for (auto& rr : rep.regions) {
            if (!rr.ksm_requested) continue;
            rr.ksm_merged_pages = *rep.ksm_process_merging_pages;
            break;
        }
    }
    rep.warnings.assign(warnings.begin(), warnings.end());
    return rep;
}

std::vector<std::string> format_report(const MemoryReport& r) {
    std::vector<std::string> out;
    std::string ksmd = !r.ksm_run ? "absent" : *r.ksm_run == 1 ? "running" : fmt::format("stopped(run={})", *r.ksm_run);
    out.push_back(fmt::format("ferry: memory: host thp={} shmem_thp={} ksmd={} ksm_merging_pages={} ksm_source=\"{}\"",
                              r.thp_host_mode.value_or("absent"), r.thp_shmem_mode.value_or("absent"), ksmd,
                              r.ksm_process_merging_pages ? std::to_string(*r.ksm_process_merging_pages) : "absent",
                              r.ksm_source));
    for (const auto& rr : r.regions) {
        std::string nodes;
        for (auto [node, n] : rr.pages_per_node) nodes += fmt::format("{}{}:{}", nodes.empty() ? "" : ",", node, n);
        if (nodes.empty()) nodes = "none";
        double thp_pct = rr.size ? 100.0 * static_cast<double>(rr.thp_bytes + rr.hugetlb_bytes) / static_cast<double>(rr.size) : 0;
        out.push_back(fmt::format(
            "ferry: memory: region slot={} zone={} gpa={:#x} size={} backend={} rss_bytes={} thp={} thp_bytes={} "
            "hugetlb_bytes={} huge_pct={:.1f} ksm={} ksm_merged_pages={} prealloc={} numa_requested={} numa_policy={} "
            "pages_per_node={} numa_sampled={} numa_stride={} numa_unpopulated={}{}",
            rr.slot, rr.zone, rr.gpa.raw(), rr.size, backend_name(rr.backend), rr.rss_bytes, rr.thp_requested ? "on" : "off",
            rr.thp_bytes, rr.hugetlb_bytes, thp_pct, rr.ksm_requested ? "on" : "off", rr.ksm_merged_pages,
            rr.prealloc_requested ? "on" : "off", rr.numa_requested, rr.numa_policy, nodes, rr.numa_sampled,
            rr.numa_sample_stride, rr.numa_unpopulated, rr.smaps_exact ? "" : " smaps_exact=no"));
    }
    for (const auto& w : r.warnings) out.push_back("ferry: memory: warning: " + w);
    return out;
}

}  // namespace ferry
