// The grammars of the option values that describe devices and placement: --disk,
// --net, --numa-node and --cpu. They live here, with the options; the layers below
// take the typed results (DiskSpec, NetSpec, NumaPolicy, CpuModel).
#pragma once

#include <string>

#include "base/error.hpp"
#include "devices/virtio/blk.hpp"
#include "devices/virtio/net.hpp"
#include "memory/numa.hpp"
#include "vmm/cpu_model.hpp"

namespace ferry {

// "PATH[,readonly]"
Result<virtio::DiskSpec> parse_disk_spec(const std::string& s);
// "tap:NAME[,mac=XX:XX:XX:XX:XX:XX]"
Result<virtio::NetSpec> parse_net_spec(const std::string& s);
// NODES[:bind|preferred|interleave], NODES as sysfs writes them ("0", "0,2", "0-3,7");
// the mode defaults to bind. Preferred takes exactly one node.
Result<NumaPolicy> parse_numa_node(const std::string& spec);
// "host", "baseline", "host,-avx512f,-aes"; unknown models or features are errors.
Result<CpuModel> parse_cpu_model(const std::string& spec);

}  // namespace ferry
