// The subcommands of the `ferry` executable. Each returns the process exit status.
#pragma once

#include "cli/run_options.hpp"

namespace ferry {

// Exit statuses of `ferry run`: ferry's own, and the guest's power-off code mapped
// clear of them (guest_exit_status).
inline constexpr int kExitError = 1;       // ferry could not run the guest
inline constexpr int kExitUsage = 2;       // bad options or config
inline constexpr int kExitGuestCrash = 3;  // triple fault, emulation failure
inline constexpr int kExitPaused = 4;      // ferry migrate: a postcopy paused (recoverable)
// A guest that powers off with code c: 0 stays 0 (a clean power-off); 1..111 become
// 16 + c (17..127); larger codes become 127. Nothing lands on 1-3, nor on 128 and up
// (what a shell reports for a signal).
inline constexpr int kExitGuestBase = 16;
constexpr int guest_exit_status(uint64_t code) {
    if (code == 0) return 0;
    return code >= 112 ? 127 : kExitGuestBase + static_cast<int>(code);
}

int cmd_run(const RunArgs& args, bool memory_report);

// `ferry qmp`: one QMP command to a running ferry (cli/qmp.cpp).
struct QmpArgs {
    std::string socket;               // --qmp PATH
    std::string command;              // COMMAND
    std::optional<std::string> args;  // ARGS-JSON, an object
    double timeout_s = 30;            // per step: greeting + negotiation, then the command
};
int cmd_qmp(const QmpArgs& args);

// `ferry migrate`: drive a live migration through the source's QMP socket and show
// its progress (cli/migrate.cpp).
struct MigrateArgs {
    std::string qmp;                           // --qmp PATH of the source
    std::string to;                            // --to tcp:HOST:PORT
    std::string mode = "precopy";              // precopy|postcopy|hybrid
    std::optional<uint64_t> downtime_limit;    // ms
    std::optional<std::string> max_bandwidth;  // bytes/s with K/M/G suffix
    bool postcopy_preempt = false;             // answers to page requests on a second connection
    bool tls = false;                          // QMP tls-creds "tls0": the source's credentials
    bool resume = false;                       // recover a paused postcopy (migrate "resume": true)
    bool progress = false;                     // a progress line on stderr
    bool json = false;                         // one query-migrate JSON line per poll on stdout
};
int cmd_migrate(const MigrateArgs& args);

}  // namespace ferry
