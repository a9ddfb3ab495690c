#include "monitor/dispatcher.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>

#include <fmt/format.h>

namespace ferry {

ArgType ArgType::any() { return ArgType{}; }
ArgType ArgType::boolean() { return ArgType{Kind::Bool, {}, nullptr, {}}; }
ArgType ArgType::integer() { return ArgType{Kind::Int, {}, nullptr, {}}; }
ArgType ArgType::uinteger() { return ArgType{Kind::UInt, {}, nullptr, {}}; }
ArgType ArgType::number() { return ArgType{Kind::Number, {}, nullptr, {}}; }
ArgType ArgType::string() { return ArgType{Kind::String, {}, nullptr, {}}; }
ArgType ArgType::enumeration(std::vector<std::string> values) { return ArgType{Kind::Enum, std::move(values), nullptr, {}}; }
ArgType ArgType::array_of(ArgType element) {
    return ArgType{Kind::Array, {}, std::make_shared<const ArgType>(std::move(element)), {}};
}
ArgType ArgType::object(std::vector<ArgSpec> fields) { return ArgType{Kind::Object, {}, nullptr, std::move(fields)}; }

namespace {

QmpError invalid_type(const std::string& name, const char* expected) {
    return QmpError{QmpErrorClass::GenericError, fmt::format("Invalid parameter type for '{}', expected: {}", name, expected)};
}

bool fits_int64(const nlohmann::json& v) {
    if (v.is_number_unsigned()) return v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    return v.is_number_integer();
}

std::optional<QmpError> check_value(const nlohmann::json& v, const ArgType& t, const std::string& name) {
    using Kind = ArgType::Kind;
    switch (t.kind) {
        case Kind::Any: return std::nullopt;
        case Kind::Bool:
            if (!v.is_boolean()) return invalid_type(name, "boolean");
            return std::nullopt;
        case Kind::Int:
            if (!fits_int64(v)) return invalid_type(name, "integer");
            return std::nullopt;
        case Kind::UInt:
            if (!v.is_number_unsigned()) {
                // QEMU: a non-number is a type error, a number out of range a value error.
                if (!v.is_number()) return invalid_type(name, "integer");
                return QmpError{QmpErrorClass::GenericError, fmt::format("Parameter '{}' expects uint64", name)};
            }
            return std::nullopt;
        case Kind::Number:
            if (!v.is_number()) return invalid_type(name, "number");
            return std::nullopt;
        case Kind::String:
            if (!v.is_string()) return invalid_type(name, "string");
            return std::nullopt;
        case Kind::Enum: {
            if (!v.is_string()) return invalid_type(name, "string");
            const auto& s = v.get_ref<const std::string&>();
            if (std::find(t.values.begin(), t.values.end(), s) == t.values.end())
                return QmpError{QmpErrorClass::GenericError, fmt::format("Parameter '{}' does not accept value '{}'", name, s)};
            return std::nullopt;
        }
        case Kind::Array: {
            if (!v.is_array()) return invalid_type(name, "array");
            for (size_t i = 0; i < v.size(); ++i) {
                if (auto err = check_value(v[i], t.element ? *t.element : ArgType{}, fmt::format("{}[{}]", name, i))) return err;
            }
            return std::nullopt;
        }
        case Kind::Object:
            if (!v.is_object()) return invalid_type(name, "object");
            return check_arguments(v, t.fields, name);
    }
    return std::nullopt;
}

}  // namespace

std::optional<QmpError> check_arguments(const nlohmann::json& args, const std::vector<ArgSpec>& fields, const std::string& prefix) {
    auto full = [&](const std::string& n) { return prefix.empty() ? n : prefix + "." + n; };
    for (const auto& f : fields) {
        auto it = args.find(f.name);
        if (it == args.end()) {
            if (f.optional) continue;
            return QmpError{QmpErrorClass::GenericError, fmt::format("Parameter '{}' is missing", full(f.name))};
        }
        if (auto err = check_value(*it, f.type, full(f.name))) return err;
    }
    for (const auto& item : args.items()) {
        const std::string& key = item.key();  // not a structured binding: clang 14 cannot capture one
        bool known = std::any_of(fields.begin(), fields.end(), [&](const ArgSpec& f) { return f.name == key; });
        if (!known) return QmpError{QmpErrorClass::GenericError, fmt::format("Parameter '{}' is unexpected", full(key))};
    }
    return std::nullopt;
}

CommandTable::CommandTable() {
    // qmp_capabilities: the only command accepted before negotiation; ferry offers no
    // capabilities (no out-of-band execution), so `enable` may only be empty.
    (void)add({"qmp_capabilities",
               {{"enable", ArgType::array_of(ArgType::enumeration({"oob"})), true}},
               [](const nlohmann::json& args, CallContext& call) -> QmpResult {
                   if (call.command_mode)
                       return qmp_error("Capabilities negotiation is already complete, command ignored",
                                        QmpErrorClass::CommandNotFound);
                   if (auto it = args.find("enable"); it != args.end() && !it->empty())
                       return qmp_error(fmt::format("Capability {} not available", (*it)[0].get<std::string>()));
                   call.command_mode = true;
                   return nlohmann::json::object();
               }});
    (void)add({"query-version", {}, [](const nlohmann::json&, CallContext&) -> QmpResult { return qmp_version(); }});
    (void)add({"query-commands", {}, [this](const nlohmann::json&, CallContext&) -> QmpResult {
                   nlohmann::json list = nlohmann::json::array();
                   for (const auto& name : names()) list.push_back({{"name", name}});
                   return list;
               }});
}

Result<void> CommandTable::add(Command cmd) {
    if (commands_.count(cmd.name)) return fail(Domain::Monitor, "QMP command '" + cmd.name + "' registered twice");
    std::string name = cmd.name;
    commands_.emplace(std::move(name), std::move(cmd));
    return {};
}

const Command* CommandTable::find(std::string_view name) const {
    auto it = commands_.find(name);
    return it == commands_.end() ? nullptr : &it->second;
}

std::vector<std::string> CommandTable::names() const {
    std::vector<std::string> out;
    for (const auto& [name, cmd] : commands_) out.push_back(name);
    return out;
}

QmpResult CommandTable::run(const nlohmann::json& request, CallContext& call) const {
    if (!request.is_object()) return qmp_error("QMP input must be a JSON object");
    const nlohmann::json* execute = nullptr;
    for (const auto& [key, value] : request.items()) {
        if (key == "execute") {
            if (!value.is_string()) return qmp_error("QMP input member 'execute' must be a string");
            execute = &value;
        } else if (key == "arguments") {
            if (!value.is_object()) return qmp_error("QMP input member 'arguments' must be an object");
        } else if (key != "id") {
            return qmp_error(fmt::format("QMP input member '{}' is unexpected", key));
        }
    }
    if (!execute) return qmp_error("QMP input lacks member 'execute'");
    const auto& name = execute->get_ref<const std::string&>();
    if (!call.command_mode && name != "qmp_capabilities")
        return qmp_error("Expecting capabilities negotiation with 'qmp_capabilities'", QmpErrorClass::CommandNotFound);
    const Command* cmd = find(name);
    if (!cmd) return qmp_error(fmt::format("The command {} has not been found", name), QmpErrorClass::CommandNotFound);
    static const nlohmann::json kNoArguments = nlohmann::json::object();
    auto it = request.find("arguments");
    const nlohmann::json& args = it == request.end() ? kNoArguments : *it;
    if (auto err = check_arguments(args, cmd->args)) return std::unexpected(std::move(*err));
    return cmd->handler(args, call);
}

nlohmann::json CommandTable::dispatch(const nlohmann::json& request, CallContext& call) const {
    const nlohmann::json* id = nullptr;
    if (request.is_object()) {
        if (auto it = request.find("id"); it != request.end()) id = &*it;
    }
    QmpResult result;
    try {
        result = run(request, call);
    } catch (const std::exception& e) {
        result = qmp_error(std::string("internal error: ") + e.what());
    }
    return qmp_reply(result, id);
}

}  // namespace ferry
