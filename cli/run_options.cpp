#include "cli/run_options.hpp"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <unistd.h>

#include <charconv>

#include "base/size.hpp"
#include "cli/specs.hpp"

namespace ferry {

namespace {

Result<void> take_string(const toml::node& node, const std::string& key, std::optional<std::string>& out) {
    if (auto s = node.value<std::string>()) {
        out = *s;
        return {};
    }
    if (node.is_boolean()) {
        out = node.value<bool>().value_or(false) ? "on" : "off";
        return {};
    }
    // Numbers are accepted where a size or count is expected (mem = 512 means bytes).
    if (!node.is_integer()) return fail(Domain::Config, fmt::format("config key '{}' has the wrong type", key));
    if (auto i = node.value<int64_t>()) {
        if (*i < 0) return fail(Domain::Config, fmt::format("config key '{}' must not be negative", key));
        out = std::to_string(*i);
        return {};
    }
    return fail(Domain::Config, fmt::format("config key '{}' has the wrong type", key));
}

// disk = "a.img" | ["a.img", "b.img,readonly"]: appended to `out`.
Result<void> take_strings(const toml::node& node, const std::string& key, std::vector<std::string>& out) {
    if (const auto* arr = node.as_array()) {
        for (const auto& d : *arr) {
            std::optional<std::string> s;
            if (auto r = take_string(d, key, s); !r) return r;
            out.push_back(*s);
        }
        return {};
    }
    std::optional<std::string> s;
    if (auto r = take_string(node, key, s); !r) return r;
    out.push_back(*s);
    return {};
}

// host-nodes = 0 | "0-1,3" | [0, 1]
Result<void> take_node_list(const toml::node& node, std::optional<std::string>& out) {
    if (const auto* arr = node.as_array()) {
        std::string list;
        for (const auto& n : *arr) {
            // as_integer first: value<int64_t>() converts a float, out of range is UB.
            const auto* i = n.as_integer();
            if (!i || i->get() < 0) return fail(Domain::Config, "memory-zone: host-nodes must be node numbers");
            list += (list.empty() ? "" : ",") + std::to_string(i->get());
        }
        out = list;
        return {};
    }
    return take_string(node, "host-nodes", out);
}

Result<void> take_memory_zones(const toml::node& node, std::vector<MemoryZoneArgs>& out) {
    const auto* arr = node.as_array();
    if (!arr) return fail(Domain::Config, "'memory-zone' must be an array of tables ([[memory-zone]])");
    for (const auto& item : *arr) {
        const auto* tbl = item.as_table();
        if (!tbl) return fail(Domain::Config, "'memory-zone' must be an array of tables ([[memory-zone]])");
        MemoryZoneArgs z;
        for (const auto& [k, v] : *tbl) {
            std::string key(k.str());
            Result<void> ok;
            if (key == "size") ok = take_string(v, "memory-zone.size", z.size);
            else if (key == "host-nodes") ok = take_node_list(v, z.host_nodes);
            else if (key == "policy") ok = take_string(v, "memory-zone.policy", z.policy);
            else return fail(Domain::Config, fmt::format("memory-zone: unknown key '{}' (size, host-nodes, policy)", key));
            if (!ok) return ok;
        }
        out.push_back(std::move(z));
    }
    return {};
}

Result<bool> parse_on_off(const std::string& opt, const std::string& v) {
    if (v == "on") return true;
    if (v == "off") return false;
    return fail(Domain::Config, fmt::format("{} must be 'on' or 'off', not '{}'", opt, v));
}

}  // namespace

Result<RunArgs> parse_run_config(std::string_view text, const std::string& origin) {
    toml::table tbl;
    try {
        tbl = toml::parse(text, origin);
    } catch (const toml::parse_error& e) {
        const auto& where = e.source().begin;
        return fail(Domain::Config, fmt::format("{}:{}:{}: {}", origin, where.line, where.column, e.description()));
    }
    RunArgs a;
    for (const auto& [k, node] : tbl) {
        std::string key(k.str());
        Result<void> ok;
        if (key == "kernel") ok = take_string(node, key, a.kernel);
        else if (key == "initrd") ok = take_string(node, key, a.initrd);
        else if (key == "cmdline") ok = take_string(node, key, a.cmdline);
        else if (key == "mem") ok = take_string(node, key, a.mem);
        else if (key == "cpus") ok = take_string(node, key, a.cpus);
        else if (key == "qmp") ok = take_string(node, key, a.qmp);
        else if (key == "serial") ok = take_string(node, key, a.serial);
        else if (key == "memory-backend") ok = take_string(node, key, a.memory_backend);
        else if (key == "thp") ok = take_string(node, key, a.thp);
        else if (key == "ksm") ok = take_string(node, key, a.ksm);
        else if (key == "numa-node") ok = take_string(node, key, a.numa_node);
        else if (key == "incoming") ok = take_string(node, key, a.incoming);
        else if (key == "keep-source") ok = take_string(node, key, a.keep_source);
        else if (key == "paused") ok = take_string(node, key, a.paused);
        else if (key == "no-reboot") ok = take_string(node, key, a.no_reboot);
        else if (key == "no-acpi") ok = take_string(node, key, a.no_acpi);
        else if (key == "cpu") ok = take_string(node, key, a.cpu);
        else if (key == "seccomp") ok = take_string(node, key, a.seccomp);
        else if (key == "tls-creds") ok = take_string(node, key, a.tls_creds);
        else if (key == "tls-psk") ok = take_string(node, key, a.tls_psk);
        else if (key == "tls-authz") ok = take_string(node, key, a.tls_authz);
        else if (key == "prealloc") ok = take_string(node, key, a.prealloc);
        else if (key == "memory-report") ok = take_string(node, key, a.memory_report);
        else if (key == "memory-zone") ok = take_memory_zones(node, a.memory_zones);
        else if (key == "disk") ok = take_strings(node, key, a.disks);
        else if (key == "net") ok = take_strings(node, key, a.nets);
        else {
            return fail(Domain::Config, fmt::format("{}: unknown key '{}'", origin, key));
        }
        if (!ok) return fail(Domain::Config, origin + ": " + ok.error().message());
    }
    return a;
}

RunArgs merge_run_args(RunArgs file, const RunArgs& cli) {
    auto pick = [](std::optional<std::string>& dst, const std::optional<std::string>& src) {
        if (src) dst = src;
    };
    pick(file.kernel, cli.kernel);
    pick(file.initrd, cli.initrd);
    pick(file.cmdline, cli.cmdline);
    pick(file.mem, cli.mem);
    pick(file.cpus, cli.cpus);
    pick(file.qmp, cli.qmp);
    pick(file.serial, cli.serial);
    pick(file.memory_backend, cli.memory_backend);
    pick(file.thp, cli.thp);
    pick(file.ksm, cli.ksm);
    pick(file.numa_node, cli.numa_node);
    pick(file.incoming, cli.incoming);
    pick(file.keep_source, cli.keep_source);
    pick(file.paused, cli.paused);
    pick(file.no_reboot, cli.no_reboot);
    pick(file.no_acpi, cli.no_acpi);
    pick(file.cpu, cli.cpu);
    pick(file.seccomp, cli.seccomp);
    pick(file.tls_creds, cli.tls_creds);
    pick(file.tls_psk, cli.tls_psk);
    pick(file.tls_authz, cli.tls_authz);
    pick(file.prealloc, cli.prealloc);
    pick(file.memory_report, cli.memory_report);
    if (!cli.memory_zones.empty()) file.memory_zones = cli.memory_zones;
    if (!cli.disks.empty()) file.disks = cli.disks;
    if (!cli.nets.empty()) file.nets = cli.nets;
    return file;
}

Result<SerialSpec> parse_serial(const std::string& s) {
    if (s == "stdio") return SerialSpec{SerialKind::Stdio, {}};
    if (s == "none") return SerialSpec{SerialKind::None, {}};
    if (s.rfind("file:", 0) == 0 && s.size() > 5) return SerialSpec{SerialKind::File, s.substr(5)};
    return fail(Domain::Config, fmt::format("--serial must be stdio, none or file:PATH, not '{}'", s));
}

namespace {

constexpr size_t kMaxMemoryZones = 32;

// [[memory-zone]] tables -> MachineConfig::zones; mem_size becomes their total
// (a --mem/mem that disagrees is an error).
Result<void> plan_memory_zones(const RunArgs& a, MachineConfig& m) {
    if (a.memory_zones.empty()) return {};
    if (a.memory_zones.size() > kMaxMemoryZones)
        return fail(Domain::Config, fmt::format("at most {} memory zones, not {}", kMaxMemoryZones, a.memory_zones.size()));
    uint64_t total = 0;
    for (size_t i = 0; i < a.memory_zones.size(); ++i) {
        const auto& z = a.memory_zones[i];
        auto where = [i](const std::string& what) { return fail(Domain::Config, fmt::format("memory-zone {}: {}", i, what)); };
        if (!z.size) return where("size is required");
        auto size = parse_size(*z.size);
        if (!size || *size == 0 || *size % (2ull << 20) != 0)
            return where(fmt::format("size '{}' must be a non-zero multiple of 2M", *z.size));
        MemoryZone zone{*size, {}};
        std::string mode_text = z.policy.value_or(z.host_nodes ? "bind" : "default");
        auto mode = parse_numa_mode(mode_text);
        if (!mode) return where(fmt::format("policy must be bind, preferred, interleave or default, not '{}'", mode_text));
        std::vector<unsigned> nodes;
        if (z.host_nodes) {
            auto parsed = parse_node_list(*z.host_nodes);
            if (!parsed) return where(fmt::format("host-nodes '{}' is not a node list (e.g. 0, \"0-1\", [0, 1])", *z.host_nodes));
            nodes = *parsed;
        }
        auto numa = make_numa_policy(*mode, std::move(nodes));
        if (!numa) return where(numa.error().message());
        zone.numa = *numa;
        if (__builtin_add_overflow(total, *size, &total)) return where("sizes overflow");
        m.zones.push_back(std::move(zone));
    }
    if (a.mem && m.mem_size != total)
        return fail(Domain::Config, fmt::format("--mem {} does not match the memory zones' total {}", *a.mem, format_size(total)));
    m.mem_size = total;
    return {};
}

}  // namespace

Result<RunPlan> plan_run(const RunArgs& a) {
    RunPlan p;
    MachineConfig& m = p.machine;
    if (a.incoming) {
        // The guest comes from the stream: no kernel is loaded (one given is ignored).
        if (*a.incoming != "defer" && a.incoming->rfind("tcp:", 0) != 0)
            return fail(Domain::Config, fmt::format("--incoming must be tcp:HOST:PORT or defer, not '{}'", *a.incoming));
        p.incoming = a.incoming;
        m.load_kernel = false;
        m.kernel = a.kernel.value_or("");
    } else {
        if (!a.kernel || a.kernel->empty()) return fail(Domain::Config, "--kernel PATH is required");
        m.kernel = *a.kernel;
    }
    p.keep_source = a.keep_source == "on";
    if (a.paused && *a.paused != "on" && *a.paused != "off")
        return fail(Domain::Config, fmt::format("paused must be on or off, not '{}'", *a.paused));
    p.paused = a.paused == "on";
    if (p.paused && !p.incoming)
        return fail(Domain::Config, "--paused is for an incoming migration (with --incoming); ferry does not start a booted guest paused");
    if (a.no_reboot && *a.no_reboot != "on" && *a.no_reboot != "off")
        return fail(Domain::Config, fmt::format("no-reboot must be on or off, not '{}'", *a.no_reboot));
    p.reboot = a.no_reboot != "on";
    if (a.no_acpi && *a.no_acpi != "on" && *a.no_acpi != "off")
        return fail(Domain::Config, fmt::format("no-acpi must be on or off, not '{}'", *a.no_acpi));
    m.acpi = a.no_acpi != "on";
    if (a.seccomp) {
        auto mode = seccomp::parse_mode(*a.seccomp);
        if (!mode) return fail(Domain::Config, fmt::format("--seccomp must be on, log or off, not '{}'", *a.seccomp));
        p.seccomp = *mode;
    }
    if (a.tls_creds && a.tls_psk) return fail(Domain::Config, "--tls-creds and --tls-psk: give one of them, not both");
    if ((a.tls_creds && a.tls_creds->empty()) || (a.tls_psk && a.tls_psk->empty()))
        return fail(Domain::Config, "--tls-creds / --tls-psk need a path");
    if (a.tls_authz && !a.tls_creds && !a.tls_psk) return fail(Domain::Config, "--tls-authz needs --tls-creds or --tls-psk");
    p.tls_creds = a.tls_creds;
    p.tls_psk = a.tls_psk;
    p.tls_authz = a.tls_authz.value_or("");
    if (a.cpu) {
        auto model = parse_cpu_model(*a.cpu);
        if (!model) return std::unexpected(model.error());
        m.cpu_model = *model;
    }
    m.initrd = a.initrd;
    m.cmdline = a.cmdline.value_or("");
    if (a.mem) {
        auto size = parse_size(*a.mem);
        if (!size) return fail(Domain::Config, fmt::format("--mem: '{}' is not a size (e.g. 512M, 4G)", *a.mem));
        if (*size == 0) return fail(Domain::Config, "--mem must be larger than 0");
        if (*size % (2ull << 20) != 0) return fail(Domain::Config, fmt::format("--mem: {} is not a multiple of 2 MiB", *a.mem));
        if (*size < (4ull << 20)) return fail(Domain::Config, "--mem must be at least 4M");
        m.mem_size = *size;
    }
    if (a.cpus) {
        unsigned v = 0;
        auto [ptr, ec] = std::from_chars(a.cpus->data(), a.cpus->data() + a.cpus->size(), v);
        if (ec != std::errc() || ptr != a.cpus->data() + a.cpus->size() || v == 0 || v > kMaxCpus)
            return fail(Domain::Config, fmt::format("--cpus must be a number from 1 to {}, not '{}'", kMaxCpus, *a.cpus));
        m.cpus = v;
    }
    if (a.memory_backend) {
        auto b = parse_backend(*a.memory_backend);
        if (!b) return fail(Domain::Config, fmt::format("--memory-backend must be anon, memfd or hugetlbfs, not '{}'", *a.memory_backend));
        m.backend = *b;
    }
    if (a.thp) {
        auto on = parse_on_off("--thp", *a.thp);
        if (!on) return std::unexpected(on.error());
        m.thp = *on;
    }
    if (a.ksm) {
        auto on = parse_on_off("--ksm", *a.ksm);
        if (!on) return std::unexpected(on.error());
        m.ksm = *on;
    }
    if (a.numa_node) {
        auto numa = parse_numa_node(*a.numa_node);
        if (!numa) return std::unexpected(numa.error());
        m.numa = *numa;
    }
    if (a.prealloc) {
        auto on = parse_on_off("--prealloc", *a.prealloc);
        if (!on) return std::unexpected(on.error());
        m.prealloc = *on;
        if (m.prealloc) m.prealloc_progress = prealloc_progress_printer(STDERR_FILENO);
    }
    if (a.memory_report) {
        auto on = parse_on_off("--memory-report", *a.memory_report);
        if (!on) return std::unexpected(on.error());
        m.memory_report_fd = *on ? STDERR_FILENO : -1;
    }
    if (auto zones = plan_memory_zones(a, m); !zones) return std::unexpected(zones.error());
    m.warn = [](const std::string& line) { fmt::print(stderr, "ferry: warning: {}\n", line); };
    auto serial = parse_serial(a.serial.value_or("stdio"));
    if (!serial) return std::unexpected(serial.error());
    p.serial = *serial;
    p.qmp = a.qmp;
    for (const auto& d : a.disks) {
        auto spec = parse_disk_spec(d);
        if (!spec) return std::unexpected(spec.error());
        m.disks.push_back(*spec);
    }
    for (size_t i = 0; i < a.nets.size(); ++i) {
        auto spec = parse_net_spec(a.nets[i]);
        if (!spec) return std::unexpected(spec.error());
        if (!spec->mac_given) spec->mac = {0x52, 0x54, 0x00, 0x12, 0x34, static_cast<uint8_t>(0x56 + i)};  // QEMU's default
        m.nets.push_back(*spec);
    }
    return p;
}

}  // namespace ferry
