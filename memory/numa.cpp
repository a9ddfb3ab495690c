#include "memory/numa.hpp"

#include <numaif.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <fstream>

#include "base/size.hpp"

namespace ferry {

namespace {

constexpr unsigned kMaxNodes = 1024;  // the kernel's largest MAX_NUMNODES (NODES_SHIFT 10)
constexpr unsigned kBitsPerLong = 8 * sizeof(unsigned long);

std::string join_nodes(const std::vector<unsigned>& nodes) { return fmt::format("{}", fmt::join(nodes, ",")); }

std::optional<unsigned> parse_uint(std::string_view s) {
    unsigned v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
    return v;
}

std::optional<std::string> read_line(const char* path) {
    std::ifstream f(path);
    std::string line;
    if (!f || !std::getline(f, line)) return std::nullopt;
    return line;
}

}  // namespace

const char* numa_mode_name(NumaMode m) {
    switch (m) {
        case NumaMode::Default: return "default";
        case NumaMode::Bind: return "bind";
        case NumaMode::Preferred: return "preferred";
        case NumaMode::Interleave: return "interleave";
    }
    return "?";
}

std::optional<NumaMode> parse_numa_mode(const std::string& s) {
    for (NumaMode m : {NumaMode::Default, NumaMode::Bind, NumaMode::Preferred, NumaMode::Interleave})
        if (s == numa_mode_name(m)) return m;
    return std::nullopt;
}

std::string to_string(const NumaPolicy& p) {
    if (p.mode == NumaMode::Default) return "default";
    return std::string(numa_mode_name(p.mode)) + ":" + join_nodes(p.nodes);
}

std::optional<std::vector<unsigned>> parse_node_list(const std::string& s) {
    std::vector<unsigned> out;
    std::string_view rest(s);
    while (!rest.empty()) {
        auto comma = rest.find(',');
        std::string_view item = rest.substr(0, comma);
        rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
        if (comma != std::string_view::npos && rest.empty()) return std::nullopt;  // trailing comma
        auto dash = item.find('-');
        auto lo = parse_uint(item.substr(0, dash));
        auto hi = dash == std::string_view::npos ? lo : parse_uint(item.substr(dash + 1));
        if (!lo || !hi || *lo > *hi || *hi >= kMaxNodes) return std::nullopt;
        for (unsigned n = *lo; n <= *hi; ++n) out.push_back(n);
    }
    if (out.empty()) return std::nullopt;
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

Result<NumaPolicy> make_numa_policy(NumaMode mode, std::vector<unsigned> nodes) {
    std::sort(nodes.begin(), nodes.end());
    nodes.erase(std::unique(nodes.begin(), nodes.end()), nodes.end());
    if (mode == NumaMode::Default) {
        if (!nodes.empty()) return fail(Domain::Config, "NUMA policy 'default' takes no host nodes");
        return NumaPolicy{};
    }
    if (nodes.empty()) return fail(Domain::Config, fmt::format("NUMA policy '{}' needs at least one host node", numa_mode_name(mode)));
    if (nodes.back() >= kMaxNodes) return fail(Domain::Config, fmt::format("host NUMA node {} is out of range (0-{})", nodes.back(), kMaxNodes - 1));
    if (mode == NumaMode::Preferred && nodes.size() != 1)
        return fail(Domain::Config, fmt::format("NUMA policy 'preferred' takes exactly one host node, not '{}'", join_nodes(nodes)));
    return NumaPolicy{mode, std::move(nodes)};
}

std::vector<unsigned> host_memory_nodes() {
    for (const char* path : {"/sys/devices/system/node/has_memory", "/sys/devices/system/node/online"}) {
        if (auto line = read_line(path)) {
            if (auto nodes = parse_node_list(*line)) return *nodes;
        }
    }
    return {0};
}

Result<void> check_numa_nodes(const NumaPolicy& p) {
    if (p.mode == NumaMode::Default) return {};
    auto host = host_memory_nodes();
    for (unsigned n : p.nodes) {
        if (!std::binary_search(host.begin(), host.end(), n))
            return fail(Domain::Memory, fmt::format("host NUMA node {} does not exist or has no memory (nodes with memory here: {})",
                                                    n, join_nodes(host)));
    }
    return {};
}

Result<void> apply_numa(const MmapRegion& region, const NumaPolicy& p) {
    if (p.mode == NumaMode::Default) return {};
    unsigned max = p.nodes.back() + 1;
    std::vector<unsigned long> mask((max + kBitsPerLong - 1) / kBitsPerLong, 0);
    for (unsigned n : p.nodes) mask[n / kBitsPerLong] |= 1ul << (n % kBitsPerLong);
    int mode = p.mode == NumaMode::Bind ? MPOL_BIND : p.mode == NumaMode::Preferred ? MPOL_PREFERRED : MPOL_INTERLEAVE;
    unsigned flags = MPOL_MF_MOVE | (p.mode == NumaMode::Bind ? MPOL_MF_STRICT : 0);
    // maxnode counts one more than the highest bit (the kernel drops the last one).
    if (::mbind(region.addr(), region.size(), mode, mask.data(), mask.size() * kBitsPerLong + 1, flags) != 0) {
        int e = errno;
        std::string what = fmt::format("the host refused NUMA policy {} for {} of guest RAM (mbind)", to_string(p), format_size(region.size()));
        if (e == ENOSYS) what += " — this kernel has no NUMA support";
        if (e == EIO) what += " — pages already touched could not be moved";
        return fail(Domain::Memory, what, e);
    }
    return {};
}

Result<NumaPolicy> read_numa_policy(const void* addr) {
    int mode = 0;
    std::vector<unsigned long> mask(kMaxNodes / kBitsPerLong, 0);
    if (::get_mempolicy(&mode, mask.data(), kMaxNodes, const_cast<void*>(addr), MPOL_F_ADDR) != 0) {
        if (errno == ENOSYS) return NumaPolicy{};
        return fail_errno(Domain::Memory, fmt::format("get_mempolicy at {}", addr));
    }
    NumaPolicy p;
    mode &= ~(MPOL_F_NUMA_BALANCING | (1 << 15) | (1 << 14));  // mode flags (static/relative nodes)
    switch (mode) {
        case MPOL_BIND: p.mode = NumaMode::Bind; break;
        case MPOL_PREFERRED:
        case MPOL_PREFERRED_MANY: p.mode = NumaMode::Preferred; break;
        case MPOL_INTERLEAVE: p.mode = NumaMode::Interleave; break;
        default: return NumaPolicy{};  // default or local
    }
    for (unsigned n = 0; n < kMaxNodes; ++n)
        if (mask[n / kBitsPerLong] & (1ul << (n % kBitsPerLong))) p.nodes.push_back(n);
    return p;
}

Result<NodeSample> sample_page_nodes(const uint8_t* addr, uint64_t len, uint64_t max_samples) {
    constexpr uint64_t kPage = 4096;
    NodeSample s;
    uint64_t pages = len / kPage;
    if (pages == 0 || max_samples == 0) return s;
    uint64_t step = std::max<uint64_t>(1, (pages + max_samples - 1) / max_samples);
    s.stride = step * kPage;
    constexpr size_t kBatch = 4096;
    std::vector<void*> batch;
    std::vector<int> status;
    batch.reserve(kBatch);
    auto flush = [&]() -> Result<void> {
        if (batch.empty()) return {};
        status.assign(batch.size(), 0);
        // SAFETY: nodes == NULL only queries; the pages are this process's own mapping.
        if (::move_pages(0, batch.size(), batch.data(), nullptr, status.data(), 0) != 0) {
            if (errno == ENOSYS) {  // a kernel without NUMA: present pages (mincore) are on node 0
                for (void* page : batch) {
                    unsigned char resident = 0;
                    if (::mincore(page, kPage, &resident) == 0 && (resident & 1)) s.per_node[0]++;
                    else s.unpopulated++;
                }
                s.sampled += batch.size();
                batch.clear();
                return {};
            }
            return fail_errno(Domain::Memory, "move_pages (query) on guest RAM");
        }
        for (int st : status) {
            if (st >= 0) s.per_node[st]++;
            else s.unpopulated++;
        }
        s.sampled += batch.size();
        batch.clear();
        return {};
    };
    for (uint64_t i = 0; i < pages; i += step) {
        batch.push_back(const_cast<uint8_t*>(addr) + i * kPage);
        if (batch.size() == kBatch) {
            if (auto ok = flush(); !ok) return std::unexpected(ok.error());
        }
    }
    if (auto ok = flush(); !ok) return std::unexpected(ok.error());
    return s;
}

}  // namespace ferry
