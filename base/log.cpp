#include "base/log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>
#include <mutex>

namespace ferry {

namespace {
struct LogConfig {
    std::mutex mu;
    spdlog::level::level_enum level;
    // One stderr sink for every logger, made with the first: its constructor asks
    // whether stderr is a terminal (ioctl TCGETS), which a thread under its seccomp
    // filter may not do when it makes its first logger.
    spdlog::sink_ptr sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
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
    auto l = std::make_shared<spdlog::logger>(subsystem, c.sink);
    spdlog::register_logger(l);
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
