#include "cli/specs.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace ferry {

Result<virtio::DiskSpec> parse_disk_spec(const std::string& s) {
    virtio::DiskSpec d;
    d.path = s;
    if (auto comma = s.find(','); comma != std::string::npos) {
        d.path = s.substr(0, comma);
        std::string opt = s.substr(comma + 1);
        if (opt != "readonly" && opt != "readonly=on" && opt != "ro")
            return fail(Domain::Config, fmt::format("--disk '{}': unknown option '{}' (expected PATH[,readonly])", s, opt));
        d.readonly = true;
    }
    if (d.path.empty()) return fail(Domain::Config, "--disk needs a path");
    return d;
}

Result<virtio::NetSpec> parse_net_spec(const std::string& s) {
    auto bad = [&](const std::string& why) {
        return fail(Domain::Config, fmt::format("--net '{}': {} (expected tap:NAME[,mac=XX:XX:XX:XX:XX:XX])", s, why));
    };
    if (!s.starts_with("tap:")) return bad("only tap backends exist");
    virtio::NetSpec n;
    std::string rest = s.substr(4);
    size_t comma = rest.find(',');
    n.tap = rest.substr(0, comma);
    if (n.tap.empty()) return bad("no tap name");
    while (comma != std::string::npos) {
        size_t next = rest.find(',', comma + 1);
        std::string opt = rest.substr(comma + 1, next == std::string::npos ? std::string::npos : next - comma - 1);
        comma = next;
        if (!opt.starts_with("mac=")) return bad(fmt::format("unknown option '{}'", opt));
        std::string m = opt.substr(4);
        unsigned b[6];
        char tail;
        if (m.size() != 17 || std::sscanf(m.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &tail) != 6)
            return bad(fmt::format("'{}' is not a MAC address", m));
        for (int i = 0; i < 6; ++i) n.mac[i] = static_cast<uint8_t>(b[i]);
        if (n.mac[0] & 1) return bad(fmt::format("{} is a multicast address", m));
        n.mac_given = true;
    }
    return n;
}

Result<NumaPolicy> parse_numa_node(const std::string& spec) {
    auto colon = spec.find(':');
    std::string nodes_text = spec.substr(0, colon);
    std::string mode_text = colon == std::string::npos ? "bind" : spec.substr(colon + 1);
    auto mode = parse_numa_mode(mode_text);
    if (!mode || *mode == NumaMode::Default)
        return fail(Domain::Config, fmt::format("--numa-node: policy must be bind, preferred or interleave, not '{}'", mode_text));
    auto nodes = parse_node_list(nodes_text);
    if (!nodes)
        return fail(Domain::Config, fmt::format("--numa-node: '{}' is not a host node list (e.g. 0, 0,1 or 0-3)", nodes_text));
    auto p = make_numa_policy(*mode, std::move(*nodes));
    if (!p) return fail(Domain::Config, "--numa-node: " + p.error().message());
    return p;
}

Result<CpuModel> parse_cpu_model(const std::string& spec) {
    const auto features = cpu_feature_names();
    std::stringstream ss(spec);
    std::string item;
    CpuModel m;
    bool first = true;
    while (std::getline(ss, item, ',')) {
        if (first) {
            first = false;
            if (item == "host") m.kind = CpuModelKind::Host;
            else if (item == "baseline") m.kind = CpuModelKind::Baseline;
            else return fail(Domain::Config, fmt::format("--cpu: unknown model '{}' (host or baseline)", item));
            continue;
        }
        if (item.size() < 2 || item[0] != '-')
            return fail(Domain::Config, fmt::format("--cpu: '{}' is not -FEATURE (features can only be hidden)", item));
        if (std::ranges::find(features, item.substr(1)) == features.end())
            return fail(Domain::Config, fmt::format("--cpu: unknown feature '{}'", item.substr(1)));
        m.disabled.push_back(item.substr(1));
    }
    if (first) return fail(Domain::Config, "--cpu: empty model");
    return m;
}

}  // namespace ferry
