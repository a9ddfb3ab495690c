#include "cli/run_options.hpp"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <charconv>

#include "base/size.hpp"

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
        else if (key == "net") ok = take_string(node, key, a.net);
        else if (key == "incoming") ok = take_string(node, key, a.incoming);
        else if (key == "disk") {
            if (const auto* arr = node.as_array()) {
                for (const auto& d : *arr) {
                    std::optional<std::string> s;
                    if (auto r = take_string(d, key, s); !r) return std::unexpected(r.error());
                    a.disks.push_back(*s);
                }
            } else {
                std::optional<std::string> s;
                ok = take_string(node, key, s);
                if (ok) a.disks.push_back(*s);
            }
        } else {
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
    pick(file.net, cli.net);
    pick(file.incoming, cli.incoming);
    if (!cli.disks.empty()) file.disks = cli.disks;
    return file;
}

Result<SerialSpec> parse_serial(const std::string& s) {
    if (s == "stdio") return SerialSpec{SerialKind::Stdio, {}};
    if (s == "none") return SerialSpec{SerialKind::None, {}};
    if (s.rfind("file:", 0) == 0 && s.size() > 5) return SerialSpec{SerialKind::File, s.substr(5)};
    return fail(Domain::Config, fmt::format("--serial must be stdio, none or file:PATH, not '{}'", s));
}

Result<RunPlan> plan_run(const RunArgs& a) {
    RunPlan p;
    MachineConfig& m = p.machine;
    if (!a.kernel || a.kernel->empty()) return fail(Domain::Config, "--kernel PATH is required");
    m.kernel = *a.kernel;
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
    auto serial = parse_serial(a.serial.value_or("stdio"));
    if (!serial) return std::unexpected(serial.error());
    p.serial = *serial;
    p.qmp = a.qmp;
    // Accepted by the CLI contract, arriving with later work: refuse clearly.
    struct Pending {
        bool set;
        const char* opt;
    };
    for (const auto& pending : {Pending{a.ksm.has_value(), "--ksm"}, Pending{a.numa_node.has_value(), "--numa-node"},
                                Pending{!a.disks.empty(), "--disk"}, Pending{a.net.has_value(), "--net"},
                                Pending{a.incoming.has_value(), "--incoming"}, Pending{a.qmp.has_value(), "--qmp"}}) {
        if (pending.set) return fail(Domain::Config, fmt::format("{} is not implemented yet", pending.opt));
    }
    return p;
}

}  // namespace ferry
