// Per-subsystem loggers (vmm, mem, mig, dev.<id>, qmp, cli), all to stderr so the
// guest's serial output on stdout stays clean. Level from FERRY_LOG (trace, debug,
// info, warn, error; default warn) or set_level().
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace ferry {

std::shared_ptr<spdlog::logger> logger(const std::string& subsystem);
void set_log_level(const std::string& level);

}  // namespace ferry
