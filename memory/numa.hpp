// Host NUMA placement of guest RAM: the policy a zone asks for, its validation
// against the host's nodes, mbind(2) on a region, and the figures read back from
// the kernel (the VMA's policy via get_mempolicy, the node of each sampled page via
// move_pages).
//
//   spec (--numa-node, TOML host-nodes/policy)   "0"  "0:bind"  "0:preferred"  "0,1:interleave"
//   -> NumaPolicy{mode, nodes}                   -> mbind(MPOL_BIND|PREFERRED|INTERLEAVE, mask,
//                                                         MPOL_MF_MOVE [|MPOL_MF_STRICT for bind])
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "memory/mmap_region.hpp"

namespace ferry {

enum class NumaMode { Default, Bind, Preferred, Interleave };
const char* numa_mode_name(NumaMode m);
std::optional<NumaMode> parse_numa_mode(const std::string& s);

struct NumaPolicy {
    NumaMode mode = NumaMode::Default;  // Default: no mbind, the process's policy applies
    std::vector<unsigned> nodes;        // sorted, unique; empty only for Default

    bool operator==(const NumaPolicy&) const = default;
};
// "default", "bind:0", "interleave:0,1".
std::string to_string(const NumaPolicy& p);

// A node list as sysfs and numactl write it: "0", "0,2", "0-3,7".
std::optional<std::vector<unsigned>> parse_node_list(const std::string& s);
// Builds and checks a policy from parts (TOML zones): mode name and node list.
Result<NumaPolicy> make_numa_policy(NumaMode mode, std::vector<unsigned> nodes);

// The host nodes that have memory (/sys/devices/system/node/has_memory, else
// "online"); {0} on a kernel without NUMA support.
std::vector<unsigned> host_memory_nodes();
// Every node of `p` exists on this host and has memory; the error names the node
// and the nodes there are.
Result<void> check_numa_nodes(const NumaPolicy& p);

// mbind over the whole region. Bind uses MPOL_MF_MOVE|MPOL_MF_STRICT (pages already
// touched move, or the call fails); the others MPOL_MF_MOVE. Default: nothing.
Result<void> apply_numa(const MmapRegion& region, const NumaPolicy& p);

// The policy the kernel holds for the page at `addr` (get_mempolicy MPOL_F_ADDR).
Result<NumaPolicy> read_numa_policy(const void* addr);

// Node placement of populated pages, sampled with move_pages(2) (nodes == NULL:
// query only) at `stride` bytes over [addr, addr+len).
struct NodeSample {
    uint64_t stride = 0;        // bytes between samples (a multiple of 4 KiB)
    uint64_t sampled = 0;       // pages asked about
    uint64_t unpopulated = 0;   // of those, not present (never touched, or swapped)
    std::map<int, uint64_t> per_node;  // node -> sampled pages found there
};
// At most `max_samples` pages, evenly spread; stride = 4 KiB when that covers all.
Result<NodeSample> sample_page_nodes(const uint8_t* addr, uint64_t len, uint64_t max_samples);

}  // namespace ferry
