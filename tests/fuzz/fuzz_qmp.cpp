// fuzz_qmp: one QMP session (monitor/session.cpp: JSON framing, input limits,
// negotiation, dispatch, output buffering) fed hostile bytes over a real socketpair,
// against a command table with the protocol's own commands and two more: one whose
// schema has every argument kind (bool, int, uint, number, string, enum, array of
// objects, nested object; optional and required), which echoes its arguments, and one
// whose handler throws. The first byte sets how the rest is cut into writes (1 to 256
// bytes each), so texts split at every place. Every line the session writes back must
// be a JSON object holding "return" or "error" (or an event); crashes, hangs, leaks
// and sanitizer reports are bugs.
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "monitor/dispatcher.hpp"
#include "monitor/session.hpp"

using namespace ferry;

namespace {

const CommandTable& table() {
    static CommandTable* t = [] {
        auto* c = new CommandTable();
        std::vector<ArgSpec> inner = {{"state", ArgType::boolean()}, {"name", ArgType::string(), true}};
        Command echo{"x-fuzz-echo",
                     {{"b", ArgType::boolean(), true},
                      {"i", ArgType::integer(), true},
                      {"u", ArgType::uinteger(), true},
                      {"n", ArgType::number(), true},
                      {"s", ArgType::string()},
                      {"e", ArgType::enumeration({"precopy", "postcopy"}), true},
                      {"a", ArgType::array_of(ArgType::object(inner)), true},
                      {"o", ArgType::object({{"deep", ArgType::array_of(ArgType::uinteger())}}), true},
                      {"any", ArgType::any(), true}},
                     [](const nlohmann::json& args, CallContext&) -> QmpResult { return args; }};
        Command boom{"x-fuzz-throw", {}, [](const nlohmann::json&, CallContext&) -> QmpResult {
                         throw std::runtime_error("handler failure");
                     }};
        if (!c->add(std::move(echo)) || !c->add(std::move(boom))) __builtin_trap();
        return c;
    }();
    return *t;
}

// Reads what the session wrote; every complete line must be a reply or an event.
void check_output(int fd, std::string& pending) {
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof(buf));
        if (n <= 0) break;
        pending.append(buf, static_cast<size_t>(n));
    }
    size_t nl;
    while ((nl = pending.find('\n')) != std::string::npos) {
        auto j = nlohmann::json::parse(pending.substr(0, nl), nullptr, false);
        if (j.is_discarded() || !j.is_object() || !(j.contains("return") || j.contains("error") || j.contains("event")))
            __builtin_trap();
        pending.erase(0, nl + 1);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    const size_t chunk = size_t{data[0]} + 1;
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) return 0;
    int peer = sv[1];
    {
        QmpSession s(Fd(sv[0]), 256 * 1024);
        std::string pending;
        for (size_t at = 1; at < size && !s.dead();) {
            const size_t len = std::min(chunk, size - at);
            ssize_t w = ::write(peer, data + at, len);
            if (w > 0) at += static_cast<size_t>(w);
            else if (w < 0 && errno != EAGAIN) break;
            s.on_readable(table());
            if (s.wants_write()) s.flush();
            check_output(peer, pending);
        }
        for (int i = 0; i < 64 && !s.dead(); ++i) {  // what is still buffered
            s.on_readable(table());
            if (s.wants_write()) s.flush();
            check_output(peer, pending);
        }
    }
    ::close(peer);
    return 0;
}
