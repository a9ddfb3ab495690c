#include "monitor/qmp_protocol.hpp"

#include <sys/time.h>

namespace ferry {

const char* error_class_name(QmpErrorClass c) {
    switch (c) {
        case QmpErrorClass::GenericError: return "GenericError";
        case QmpErrorClass::CommandNotFound: return "CommandNotFound";
        case QmpErrorClass::DeviceNotActive: return "DeviceNotActive";
        case QmpErrorClass::DeviceNotFound: return "DeviceNotFound";
        case QmpErrorClass::KVMMissingCap: return "KVMMissingCap";
    }
    return "GenericError";
}

nlohmann::json qmp_version() {
    return {{"qemu", {{"micro", 0}, {"minor", 0}, {"major", 0}}}, {"package", std::string("ferry ") + FERRY_VERSION}};
}

nlohmann::json qmp_greeting() {
    return {{"QMP", {{"version", qmp_version()}, {"capabilities", nlohmann::json::array()}}}};
}

nlohmann::json qmp_reply(const QmpResult& result, const nlohmann::json* id) {
    nlohmann::json reply = nlohmann::json::object();
    if (result) {
        reply["return"] = *result;
    } else {
        reply["error"] = {{"class", error_class_name(result.error().cls)}, {"desc", result.error().desc}};
    }
    if (id) reply["id"] = *id;
    return reply;
}

nlohmann::json qmp_event(std::string_view name, nlohmann::json data) {
    timeval tv{};
    ::gettimeofday(&tv, nullptr);
    nlohmann::json event = {{"event", std::string(name)},
                            {"timestamp", {{"seconds", static_cast<int64_t>(tv.tv_sec)}, {"microseconds", static_cast<int64_t>(tv.tv_usec)}}}};
    if (!data.is_null()) event["data"] = std::move(data);
    return event;
}

std::string qmp_serialize(const nlohmann::json& message) {
    return message.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::expected<nlohmann::json, QmpError> qmp_parse(std::string_view text) {
    try {
        return nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        // "[json.exception.parse_error.101] parse error at line 1, column 2: syntax
        // error while parsing value - invalid literal; last read: 'f'": keep what
        // follows the bracketed id.
        std::string what = e.what();
        if (auto close = what.find("] "); close != std::string::npos && what.front() == '[') what.erase(0, close + 2);
        return std::unexpected(QmpError{QmpErrorClass::GenericError, "JSON parse error, " + what});
    }
}

}  // namespace ferry
