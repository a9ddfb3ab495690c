#include "base/log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>
#include <mutex>

namespace ferry {

namespace {
struct LogConfig {
    std::mutex mu;
    spdlog::level::level_enum level;
    LogConfig() {
        const char* env = std::getenv("FERRY_LOG");
        level = env ? spdlog::level::from_str(env) : spdlog::level::warn;
    }
};
LogConfig& config() {
    static LogConfig c;
    return c;
}
}  // namespace

std::shared_ptr<spdlog::logger> logger(const std::string& subsystem) {
    auto& c = config();
    std::lock_guard lock(c.mu);
    if (auto existing = spdlog::get(subsystem)) return existing;
    auto l = spdlog::stderr_color_mt(subsystem);
    l->set_level(c.level);
    l->set_pattern("ferry[%n] %l: %v");
    return l;
}

void set_log_level(const std::string& level) {
    auto& c = config();
    std::lock_guard lock(c.mu);
    c.level = spdlog::level::from_str(level);
    spdlog::apply_all([&](const std::shared_ptr<spdlog::logger>& l) { l->set_level(c.level); });
}

}  // namespace ferry
