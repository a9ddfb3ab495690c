// The QMP command table: name -> (argument schema, handler). Requests are checked
// here, in QEMU's order and with QEMU's words, before any handler runs:
//
//   1. the request is an object          "QMP input must be a JSON object"
//   2. its members: execute (a string),  "QMP input member 'execute' must be a string"
//      arguments (an object), id (any)   "QMP input member 'arguments' must be an object"
//                                        "QMP input member 'x' is unexpected"
//                                        "QMP input lacks member 'execute'"
//   3. capabilities negotiation          CommandNotFound "Expecting capabilities
//      (only qmp_capabilities before)      negotiation with 'qmp_capabilities'"
//   4. the command exists                CommandNotFound "The command x has not been found"
//   5. its arguments match the schema    "Parameter 'x' is missing"
//                                        "Invalid parameter type for 'x', expected: integer"
//                                        "Parameter 'x' expects uint64"
//                                        "Parameter 'x' does not accept value 'y'"
//                                        "Parameter 'x' is unexpected"
//
// Then the handler runs on the monitor's (main) thread and returns the `return`
// value or an error. Handlers never throw; if one does, the client gets a
// GenericError and the loop goes on. The table registers the protocol's own
// commands (qmp_capabilities, query-commands, query-version); the machine's
// commands (monitor/machine_commands.hpp) and later the migration commands are
// added by whoever owns what they act on.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "monitor/qmp_protocol.hpp"

namespace ferry {

struct ArgSpec;

// The type of one argument, as QAPI would declare it.
struct ArgType {
    enum class Kind { Any, Bool, Int, UInt, Number, String, Enum, Array, Object };
    Kind kind = Kind::Any;
    std::vector<std::string> values;         // Enum: the accepted strings
    std::shared_ptr<const ArgType> element;  // Array: the element type
    std::vector<ArgSpec> fields;             // Object: its members (no others allowed)

    static ArgType any();
    static ArgType boolean();
    static ArgType integer();   // int64
    static ArgType uinteger();  // uint64
    static ArgType number();
    static ArgType string();
    static ArgType enumeration(std::vector<std::string> values);
    static ArgType array_of(ArgType element);
    static ArgType object(std::vector<ArgSpec> fields);
};

struct ArgSpec {
    std::string name;
    ArgType type;
    bool optional = false;
};

// Checks `args` (an object) against `fields`; the error names the argument by its
// full path (e.g. capabilities[0].state) as QEMU does.
std::optional<QmpError> check_arguments(const nlohmann::json& args, const std::vector<ArgSpec>& fields,
                                        const std::string& prefix = "");

// Per-client state a command may look at or change.
struct CallContext {
    bool command_mode = false;  // capabilities negotiated
};

using Handler = std::function<QmpResult(const nlohmann::json& args, CallContext& call)>;

struct Command {
    std::string name;
    std::vector<ArgSpec> args;
    Handler handler;
};

class CommandTable {
public:
    CommandTable();  // with qmp_capabilities, query-commands, query-version
    CommandTable(const CommandTable&) = delete;
    CommandTable& operator=(const CommandTable&) = delete;

    // Fails on a duplicate name.
    Result<void> add(Command cmd);
    const Command* find(std::string_view name) const;
    std::vector<std::string> names() const;

    // One parsed request -> its reply ({"return": ...} or {"error": ...}, "id" echoed).
    nlohmann::json dispatch(const nlohmann::json& request, CallContext& call) const;

private:
    QmpResult run(const nlohmann::json& request, CallContext& call) const;
    std::map<std::string, Command, std::less<>> commands_;
};

}  // namespace ferry
