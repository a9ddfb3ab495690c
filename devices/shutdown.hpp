// How a device (or a vCPU exit) asks the machine to stop: power-off with a code,
// a reset request, or a guest crash (triple fault, emulation failure).
#pragma once

#include <functional>
#include <string>

namespace ferry {

enum class ShutdownKind { PowerOff, Reset, Crash, HostRequest };

struct ShutdownRequest {
    ShutdownKind kind;
    int code = 0;        // power-off code / signal number
    std::string detail;  // for the user
};

using ShutdownFn = std::function<void(ShutdownRequest)>;

}  // namespace ferry
