// `ferry qmp --qmp PATH COMMAND [ARGS-JSON]`: one QMP command to a running ferry.
// Prints the reply's `return` value as JSON on stdout. Exit status: 0 on success,
// 1 on an error reply (its class and desc on stderr, one line) or a broken
// exchange, 2 for usage errors (bad ARGS-JSON, nothing listening on PATH).
#include <fmt/format.h>

#include <cstdio>

#include "cli/messages.hpp"
#include "cli/commands.hpp"
#include "monitor/client.hpp"
#include "monitor/qmp_protocol.hpp"

namespace ferry {

namespace {
void errorln(const std::string& msg) { fmt::print(stderr, "ferry: {}\n", msg); }
}  // namespace

int cmd_qmp(const QmpArgs& a) {
    nlohmann::json args = nlohmann::json::object();
    if (a.args && !a.args->empty()) {
        auto parsed = qmp_parse(*a.args);
        if (!parsed) {
            errorln("ARGS-JSON: " + parsed.error().desc);
            return kExitUsage;
        }
        if (!parsed->is_object()) {
            errorln("ARGS-JSON must be a JSON object, e.g. '{\"enable\": []}'");
            return kExitUsage;
        }
        args = std::move(*parsed);
    }
    if (a.timeout_s <= 0) {
        errorln("--timeout must be a positive number of seconds");
        return kExitUsage;
    }
    auto timeout = std::chrono::milliseconds(static_cast<int64_t>(a.timeout_s * 1000));
    auto client = QmpClient::connect(a.socket);
    if (!client) {
        errorln(user_message(client.error()));
        return kExitUsage;
    }
    if (auto greeting = client->handshake(timeout); !greeting) {
        errorln(user_message(greeting.error()));
        return kExitError;
    }
    auto reply = client->execute(a.command, args, timeout);
    if (!reply) {
        errorln(user_message(reply.error()));
        return kExitError;
    }
    if (auto err = reply->find("error"); err != reply->end()) {
        std::string cls = err->value("class", std::string("GenericError"));
        std::string desc = err->value("desc", std::string());
        errorln(fmt::format("{}: {}", cls, desc));
        return kExitError;
    }
    std::string out = (*reply)["return"].dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
    fmt::print("{}\n", out);
    std::fflush(stdout);
    return 0;
}

}  // namespace ferry
