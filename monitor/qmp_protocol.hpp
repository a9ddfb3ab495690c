// The QMP wire format (QEMU's docs/interop/qmp-spec): what the server sends, built in
// one place so every reply, error and event has QEMU's shape.
//
//   server -> {"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 0},
//                                  "package": "ferry 0.1.0"}, "capabilities": []}}
//   client -> {"execute": "qmp_capabilities"}
//   server -> {"return": {}}
//   client -> {"execute": "query-status", "id": 7}
//   server -> {"return": {"status": "running", "running": true, "singlestep": false}, "id": 7}
//   client -> {"execute": "nope"}
//   server -> {"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}
//   server -> {"event": "STOP", "timestamp": {"seconds": 1700000000, "microseconds": 123456}}
//
// Each message is one line ending in "\r\n", as QEMU writes them.
#pragma once

#include <expected>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace ferry {

// QEMU's QapiErrorClass.
enum class QmpErrorClass { GenericError, CommandNotFound, DeviceNotActive, DeviceNotFound, KVMMissingCap };
const char* error_class_name(QmpErrorClass c);

struct QmpError {
    QmpErrorClass cls = QmpErrorClass::GenericError;
    std::string desc;
};

// What a command handler returns: the `return` value, or an error.
using QmpResult = std::expected<nlohmann::json, QmpError>;

inline std::unexpected<QmpError> qmp_error(std::string desc, QmpErrorClass cls = QmpErrorClass::GenericError) {
    return std::unexpected<QmpError>(QmpError{cls, std::move(desc)});
}

// {"qemu": {"micro": 0, "minor": 0, "major": 0}, "package": "ferry <version>"}: the
// greeting's version and query-version's reply.
nlohmann::json qmp_version();
nlohmann::json qmp_greeting();
// {"return": value} or {"error": {...}}, with "id" when the request had one.
nlohmann::json qmp_reply(const QmpResult& result, const nlohmann::json* id);
// {"event": name, "data": data, "timestamp": {...}} stamped with the wall clock now;
// "data" is left out when `data` is null, as QEMU leaves it out for STOP and RESUME.
nlohmann::json qmp_event(std::string_view name, nlohmann::json data = nullptr);

// One line of JSON (no newline). Never throws on bad UTF-8: it is replaced.
std::string qmp_serialize(const nlohmann::json& message);
// Parses one text from the stream; a failure is QEMU's "JSON parse error, ...".
std::expected<nlohmann::json, QmpError> qmp_parse(std::string_view text);

}  // namespace ferry
