// The subcommands of the `ferry` executable. Each returns the process exit status.
#pragma once

#include "cli/run_options.hpp"

namespace ferry {

// Exit statuses of `ferry run` besides the guest's own power-off code.
inline constexpr int kExitError = 1;       // ferry could not run the guest
inline constexpr int kExitUsage = 2;       // bad options or config
inline constexpr int kExitGuestCrash = 3;  // triple fault, emulation failure

int cmd_run(const RunArgs& args, bool memory_report);

}  // namespace ferry
