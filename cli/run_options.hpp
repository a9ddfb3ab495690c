// `ferry run` options: what the command line and the TOML config say (RunArgs,
// all optional strings as typed by the user), how they merge (the command line
// wins), and their validation into a MachineConfig with one clear error each.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.hpp"
#include "base/seccomp.hpp"
#include "vmm/machine.hpp"

namespace ferry {

// One TOML [[memory-zone]] table: size, host-nodes (a node list "0-1,3" or an
// array of node numbers), policy (bind, preferred, interleave, default).
struct MemoryZoneArgs {
    std::optional<std::string> size, host_nodes, policy;
};

struct RunArgs {
    std::optional<std::string> kernel, initrd, cmdline, mem, cpus, qmp, serial;
    std::optional<std::string> memory_backend, thp, ksm, numa_node, incoming;
    std::optional<std::string> prealloc, memory_report;  // flags: "on" / "off"
    std::vector<std::string> disks, nets;
    std::optional<std::string> keep_source;
    std::optional<std::string> paused;  // "on": an incoming guest stays paused until QMP cont
    std::optional<std::string> no_reboot;  // "on": a guest reset ends ferry
    std::optional<std::string> no_acpi;  // "on": no ACPI tables (the MP table and virtio_mmio.device= words only)
    std::optional<std::string> seccomp;  // on|log|off (base/seccomp.hpp)
    std::optional<std::string> tls_creds, tls_psk, tls_authz;  // migration TLS (migration/tls.hpp)
    std::optional<std::string> cpu;  // CPU model: host|baseline[,-FEATURE...]  // "on" keeps a migrated-away source paused
    std::vector<MemoryZoneArgs> memory_zones;  // TOML only
};

// Reads a TOML config (keys named like the long options: kernel, mem, cpus,
// memory-backend, ...). Unknown keys and wrong types are errors.
Result<RunArgs> parse_run_config(std::string_view toml_text, const std::string& origin);
// Fields set in `cli` replace those of `file`.
RunArgs merge_run_args(RunArgs file, const RunArgs& cli);

enum class SerialKind { Stdio, File, None };
struct SerialSpec {
    SerialKind kind = SerialKind::Stdio;
    std::string path;
};
Result<SerialSpec> parse_serial(const std::string& s);

struct RunPlan {
    MachineConfig machine;  // serial_fd is left for the caller to open
    SerialSpec serial;
    std::optional<std::string> qmp;
    std::optional<std::string> incoming;  // tcp:HOST:PORT, or "defer" (wait for migrate-incoming)
    bool keep_source = false;
    bool paused = false;  // with incoming: the arrived guest waits for QMP cont
    bool reboot = true;  // a guest reset boots the guest again (else ferry exits)
    // Migration TLS: a credentials directory or a PSK file (at most one), and the
    // client a destination lets in.
    std::optional<std::string> tls_creds, tls_psk;
    std::string tls_authz;
    seccomp::Mode seccomp = seccomp::Mode::On;
};
// Validates every field; the error names the option and the bad value.
Result<RunPlan> plan_run(const RunArgs& args);

}  // namespace ferry
