// The QMP commands that act on the running Machine, in QEMU's shapes:
//
//   query-status       {"status": "running"|"paused"|"shutdown"|"prelaunch",
//                       "running": bool, "singlestep": false}
//   stop               pause every vCPU; STOP event when the guest was running
//   cont               resume a paused guest; RESUME event when it was paused
//   system_reset       GenericError: ferry cannot reset a guest yet (no device or vCPU reset)
//   quit               {} and ferry exits 0 after a SHUTDOWN event (host-qmp-quit)
//   query-cpus-fast    [{"cpu-index", "qom-path", "thread-id" (the vCPU thread's TID),
//                        "props": {"core-id", "thread-id", "socket-id"}, "target": "x86_64"}]
//   ferry-query-memory per-region RAM figures (memory/report.hpp; docs/memory.md)
//   ferry-query-ram-checksum  {"xxh3", "regions": [{"gpa", "size", "xxh3"}], "status"}:
//                      XXH3-64 of all guest RAM (compare a paused source and destination)
//
// Handlers run on the main thread; stop/cont block only until the vCPUs park.
#pragma once

#include <functional>
#include <string_view>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "devices/shutdown.hpp"
#include "monitor/dispatcher.hpp"
#include "vmm/machine.hpp"

namespace ferry {

struct MachineCommandsContext {
    Machine* machine;
    // Sends an event to the QMP clients (QmpServer::emit_event).
    std::function<void(std::string_view name, nlohmann::json data)> emit;
    // Asks ferry to end once the current reply is out (stops the main loop).
    std::function<void()> quit;
    // Extra members of ferry-query-memory's reply (an incoming postcopy's THP coverage
    // before and after MADV_COLLAPSE); may be empty.
    std::function<nlohmann::json()> memory_extra = {};
    // While a migration owns the machine: why (cont, stop and system_reset are then
    // refused with it); nullopt otherwise. May be empty.
    std::function<std::optional<std::string>()> migration_owner = {};
};

Result<void> add_machine_commands(CommandTable& table, MachineCommandsContext ctx);

// SHUTDOWN event data, as QEMU's ShutdownCause names it:
//   guest power-off  {"guest": true,  "reason": "guest-shutdown"}
//   guest reset      {"guest": true,  "reason": "guest-reset"}    (ferry does not reboot)
//   guest crash      {"guest": true,  "reason": "guest-panic"}    (triple fault, KVM error)
//   host request     {"guest": false, "reason": "host-signal"}
nlohmann::json shutdown_event_data(const ShutdownRequest& req);
// {"guest": false, "reason": reason}: "host-qmp-quit", "host-signal".
nlohmann::json host_shutdown_event_data(std::string_view reason);

}  // namespace ferry
