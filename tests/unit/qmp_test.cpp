// The QMP monitor's pure parts, no sockets and no KVM: stream framing, parse errors,
// request checks and argument schemas, with QEMU's error words.
#include <catch2/catch.hpp>

#include "monitor/dispatcher.hpp"
#include "monitor/json_stream.hpp"
#include "monitor/qmp_protocol.hpp"

using namespace ferry;
using nlohmann::json;

namespace {

std::vector<std::string> split(std::string_view bytes, JsonStream& s, JsonStream::Status* status = nullptr) {
    std::vector<JsonStream::Item> items;
    auto st = s.feed(bytes, items);
    if (status) *status = st;
    std::vector<std::string> out;
    for (auto& i : items) out.push_back(i.too_deep ? std::string("<too deep>") : i.text);
    return out;
}

json run(const CommandTable& t, const std::string& text, CallContext& call) {
    auto req = qmp_parse(text);
    if (!req) return qmp_reply(std::unexpected(req.error()), nullptr);
    return t.dispatch(*req, call);
}

std::string desc(const json& reply) { return reply.at("error").at("desc").get<std::string>(); }
std::string cls(const json& reply) { return reply.at("error").at("class").get<std::string>(); }

}  // namespace

TEST_CASE("JsonStream splits objects across and within lines", "[qmp]") {
    JsonStream s;
    CHECK(split("{\"execute\": \"stop\"}\r\n{\"exe", s) == std::vector<std::string>{"{\"execute\": \"stop\"}"});
    CHECK(s.pending() == 5);
    CHECK(split("cute\":\n \"cont\"} {\"a\": \"}{]\\\"\"}", s) ==
          std::vector<std::string>{"{\"execute\":\n \"cont\"}", "{\"a\": \"}{]\\\"\"}"});
    CHECK(split("42 foo \"str\" ] , [1,[2]]\n", s) == std::vector<std::string>{"42", "foo", "\"str\"", "]", ",", "[1,[2]]"});
    // A bare token waits for its delimiter.
    CHECK(split("tru", s).empty());
    CHECK(split("e\n", s) == std::vector<std::string>{"true"});
    // A raw newline inside a string ends the text at once (it cannot parse).
    CHECK(split("{\"execute\": \"qu\n", s) == std::vector<std::string>{"{\"execute\": \"qu\n"});
}

TEST_CASE("JsonStream caps unfinished texts and nesting", "[qmp]") {
    JsonStream s(100, 4);
    JsonStream::Status st;
    CHECK(split("[[[[[1]]]]] {\"ok\": 1}", s, &st) == std::vector<std::string>{"<too deep>", "{\"ok\": 1}"});
    CHECK(st == JsonStream::Status::Ok);
    split("{\"execute\": \"" + std::string(200, 'a'), s, &st);
    CHECK(st == JsonStream::Status::TooLong);
}

TEST_CASE("JsonStream gives the same texts however the bytes are chunked", "[qmp]") {
    const std::string alphabet = "{}[]\",:\\ a1\n";
    uint32_t seed = 12345;
    auto rnd = [&] { return seed = seed * 1103515245 + 12345, (seed >> 16) & 0x7fff; };
    for (int round = 0; round < 200; ++round) {
        std::string bytes;
        for (int i = 0; i < 400; ++i) bytes.push_back(alphabet[rnd() % alphabet.size()]);
        JsonStream whole(1 << 20, 8), pieces(1 << 20, 8);
        auto expect = split(bytes, whole);
        std::vector<std::string> got;
        for (size_t off = 0; off < bytes.size();) {
            size_t n = std::min<size_t>(1 + rnd() % 7, bytes.size() - off);
            for (auto& t : split(std::string_view(bytes).substr(off, n), pieces)) got.push_back(t);
            off += n;
        }
        REQUIRE(got == expect);
        CHECK(whole.pending() == pieces.pending());
        for (const auto& t : expect) {
            if (t != "<too deep>") CHECK_NOTHROW(qmp_parse(t));  // never throws, valid or not
        }
    }
}

TEST_CASE("parse errors are QEMU's JSON parse error", "[qmp]") {
    auto bad = qmp_parse("{\"execute\": }");
    REQUIRE_FALSE(bad);
    CHECK(bad.error().desc.rfind("JSON parse error, ", 0) == 0);
    CHECK(bad.error().desc.find("[json.exception") == std::string::npos);
    // Invalid UTF-8 in an error must still serialize.
    auto utf = qmp_parse("\"\xff\xfe\"");
    REQUIRE_FALSE(utf);
    CHECK_NOTHROW(qmp_serialize(qmp_reply(std::unexpected(utf.error()), nullptr)));
}

TEST_CASE("requests are checked in QEMU's order and words", "[qmp]") {
    CommandTable t;
    CallContext call;
    CHECK(qmp_greeting()["QMP"]["version"]["qemu"] == json{{"micro", 0}, {"minor", 0}, {"major", 0}});
    CHECK(qmp_greeting()["QMP"]["capabilities"] == json::array());

    auto r = run(t, "[1]", call);
    CHECK(desc(r) == "QMP input must be a JSON object");
    CHECK(cls(r) == "GenericError");
    CHECK(desc(run(t, "{\"id\": 3}", call)) == "QMP input lacks member 'execute'");
    CHECK(desc(run(t, "{\"execute\": 3}", call)) == "QMP input member 'execute' must be a string");
    CHECK(desc(run(t, "{\"execute\": \"x\", \"arguments\": []}", call)) == "QMP input member 'arguments' must be an object");
    CHECK(desc(run(t, "{\"execute\": \"x\", \"bogus\": 1}", call)) == "QMP input member 'bogus' is unexpected");

    // Before negotiation: every command but qmp_capabilities, known or not.
    r = run(t, "{\"execute\": \"query-version\", \"id\": \"a\"}", call);
    CHECK(cls(r) == "CommandNotFound");
    CHECK(desc(r) == "Expecting capabilities negotiation with 'qmp_capabilities'");
    CHECK(r["id"] == "a");
    r = run(t, "{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": 1}}", call);
    CHECK(desc(r) == "Invalid parameter type for 'enable', expected: array");
    r = run(t, "{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"nope\"]}}", call);
    CHECK(desc(r) == "Parameter 'enable[0]' does not accept value 'nope'");
    r = run(t, "{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"oob\"]}}", call);
    CHECK(desc(r) == "Capability oob not available");
    CHECK_FALSE(call.command_mode);
    r = run(t, "{\"execute\": \"qmp_capabilities\", \"id\": {\"n\": [1]}}", call);
    CHECK(r == json{{"return", json::object()}, {"id", {{"n", {1}}}}});
    CHECK(call.command_mode);

    r = run(t, "{\"execute\": \"qmp_capabilities\"}", call);
    CHECK(cls(r) == "CommandNotFound");
    CHECK(desc(r) == "Capabilities negotiation is already complete, command ignored");
    r = run(t, "{\"execute\": \"no-such-thing\"}", call);
    CHECK(cls(r) == "CommandNotFound");
    CHECK(desc(r) == "The command no-such-thing has not been found");
    CHECK(desc(run(t, "{\"execute\": \"query-version\", \"arguments\": {\"x\": 1}}", call)) == "Parameter 'x' is unexpected");
    CHECK(run(t, "{\"execute\": \"query-version\"}", call)["return"]["package"] == std::string("ferry ") + FERRY_VERSION);
    auto cmds = run(t, "{\"execute\": \"query-commands\"}", call)["return"];
    CHECK(std::count(cmds.begin(), cmds.end(), json{{"name", "query-commands"}}) == 1);
}

TEST_CASE("argument schemas check types, ranges and nesting", "[qmp]") {
    std::vector<ArgSpec> schema{
        {"uri", ArgType::string()},
        {"speed", ArgType::uinteger(), true},
        {"limit", ArgType::integer(), true},
        {"ratio", ArgType::number(), true},
        {"caps", ArgType::array_of(ArgType::object({{"capability", ArgType::enumeration({"postcopy-ram", "events"})},
                                                     {"state", ArgType::boolean()}})),
         true},
    };
    auto check = [&](const char* text) {
        auto e = check_arguments(json::parse(text), schema);
        return e ? e->desc : std::string();
    };
    CHECK(check(R"({"uri": "tcp:1:2", "speed": 5, "limit": -1, "ratio": 0.5, "caps": [{"capability": "events", "state": true}]})").empty());
    CHECK(check("{}") == "Parameter 'uri' is missing");
    CHECK(check(R"({"uri": 1})") == "Invalid parameter type for 'uri', expected: string");
    CHECK(check(R"({"uri": "u", "speed": -1})") == "Parameter 'speed' expects uint64");
    CHECK(check(R"({"uri": "u", "speed": "1"})") == "Invalid parameter type for 'speed', expected: integer");
    CHECK(check(R"({"uri": "u", "limit": 1.5})") == "Invalid parameter type for 'limit', expected: integer");
    CHECK(check(R"({"uri": "u", "limit": 18446744073709551615})") == "Invalid parameter type for 'limit', expected: integer");
    CHECK(check(R"({"uri": "u", "ratio": true})") == "Invalid parameter type for 'ratio', expected: number");
    CHECK(check(R"({"uri": "u", "caps": {}})") == "Invalid parameter type for 'caps', expected: array");
    CHECK(check(R"({"uri": "u", "caps": [{"capability": "events", "state": 1}]})") ==
          "Invalid parameter type for 'caps[0].state', expected: boolean");
    CHECK(check(R"({"uri": "u", "caps": [{"capability": "x", "state": true}]})") == "Parameter 'caps[0].capability' does not accept value 'x'");
    CHECK(check(R"({"uri": "u", "caps": [{"capability": "events", "state": true, "more": 1}]})") ==
          "Parameter 'caps[0].more' is unexpected");
    CHECK(check(R"({"uri": "u", "extra": null})") == "Parameter 'extra' is unexpected");
}

TEST_CASE("a throwing handler becomes a GenericError", "[qmp]") {
    CommandTable t;
    REQUIRE(t.add({"boom", {}, [](const json&, CallContext&) -> QmpResult { throw std::runtime_error("kaput"); }}));
    CHECK_FALSE(t.add({"boom", {}, [](const json&, CallContext&) -> QmpResult { return json::object(); }}));
    CallContext call{true};
    auto r = t.dispatch(json{{"execute", "boom"}}, call);
    CHECK(cls(r) == "GenericError");
    CHECK(desc(r).find("kaput") != std::string::npos);
}

TEST_CASE("events carry a timestamp, and data only when there is some", "[qmp]") {
    auto stop = qmp_event("STOP");
    CHECK(stop["event"] == "STOP");
    CHECK_FALSE(stop.contains("data"));
    CHECK(stop["timestamp"]["seconds"].get<int64_t>() > 1600000000);
    CHECK(stop["timestamp"]["microseconds"].get<int64_t>() < 1000000);
    auto sd = qmp_event("SHUTDOWN", json{{"guest", false}, {"reason", "host-qmp-quit"}});
    CHECK(sd["data"]["reason"] == "host-qmp-quit");
}
