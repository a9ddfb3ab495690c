// The QMP monitor of `ferry run --qmp PATH`, driven by real clients: the stdlib Python
// client (qmp_client.py, one scenario per run, its exit status checked), socat, and
// `ferry qmp`. The guest (mode=idle) prints a tick a second, so "the guest keeps
// running" and "the guest is paused" are read off its console.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>
#include <regex>
#include <set>

#include <nlohmann/json.hpp>

#include "process.hpp"

using namespace ferry::test;
using namespace std::chrono_literals;

namespace {

constexpr auto kBoot = 60s;

std::string socket_path(const std::string& name) { return "/tmp/ferry-qmp-" + std::to_string(::getpid()) + "-" + name + ".sock"; }

bool is_socket(const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

bool exists(const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0;
}

std::vector<std::string> ferry_run(const std::string& qmp, std::vector<std::string> extra) {
    std::vector<std::string> argv{ferry_bin(), "run", "--kernel", testguest_elf(), "--mem", "64M", "--qmp", qmp};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
}

// Runs one scenario of qmp_client.py to the end; its output is in the INFO of a failure.
void python_scenario(const std::string& sock, std::vector<std::string> args) {
    std::vector<std::string> argv{"/usr/bin/python3", std::string(SOURCE_ROOT) + "/tests/integration/qmp_client.py", sock};
    argv.insert(argv.end(), args.begin(), args.end());
    Process py(argv);
    auto rc = py.wait_exit(180s);
    INFO("qmp_client.py " << Catch::Detail::stringify(args) << "\nstdout: " << py.out_text() << "\nstderr: " << py.err());
    REQUIRE(rc);
    CHECK(*rc == 0);
}

// `ferry qmp --qmp SOCK ARGS...`: exit status, stdout, stderr.
struct CliResult {
    int rc = -1;
    std::string out, err;
};
CliResult ferry_qmp(std::vector<std::string> args) {
    std::vector<std::string> argv{ferry_bin(), "qmp"};
    argv.insert(argv.end(), args.begin(), args.end());
    Process p(argv);
    auto rc = p.wait_exit(60s);
    return CliResult{rc.value_or(-1), p.out_text(), p.err()};
}

int tick_number(const std::string& line) {
    std::smatch m;
    static const std::regex re("^guest: tick=([0-9]+) ");
    return std::regex_search(line, m, re) ? std::stoi(m[1]) : -1;
}

// Waits for the next tick line; returns its number.
int next_tick(Process& p, std::chrono::seconds timeout = kBoot) {
    auto line = p.wait_line(std::regex("^guest: tick="), timeout);
    INFO(p.out_text() << p.err());
    REQUIRE(line);
    return tick_number(*line);
}

// Consumes every console line already produced.
void skip_output(Process& p) {
    while (p.wait_line(std::regex(""), 200ms)) {
    }
}

}  // namespace

TEST_CASE("QMP stop pauses the guest with a STOP event, cont resumes it with RESUME", "[kvm][qmp]") {
    auto sock = socket_path("stopcont");
    Process p(ferry_run(sock, {"--cmdline", "mode=idle"}));
    int before = next_tick(p);
    REQUIRE(is_socket(sock));

    python_scenario(sock, {"stop"});
    // The vCPUs are parked once STOP is out: whatever the guest wrote before is in the
    // pipe now, and nothing may follow.
    skip_output(p);
    int last = before;
    for (const auto& l : p.out_lines()) last = std::max(last, tick_number(l));
    CHECK_FALSE(p.wait_line(std::regex("^guest: tick="), 4s));

    python_scenario(sock, {"cont"});
    int after = next_tick(p, 30s);
    CHECK(after == last + 1);
    CHECK(next_tick(p, 30s) == after + 1);

    p.signal(SIGTERM);
    INFO(p.err());
    CHECK(p.wait_exit(30s) == 0);
    CHECK_FALSE(exists(sock));
}

TEST_CASE("QMP query-cpus-fast gives each vCPU thread's id", "[kvm][qmp]") {
    auto sock = socket_path("cpus");
    Process p(ferry_run(sock, {"--cpus", "2", "--cmdline", "mode=idle cpus=2"}));
    next_tick(p);
    python_scenario(sock, {"cpus", "2", std::to_string(p.pid())});
    python_scenario(sock, {"memory"});
    p.signal(SIGTERM);
    CHECK(p.wait_exit(30s) == 0);
}

TEST_CASE("QMP quit: reply, SHUTDOWN event, exit 0, socket removed", "[kvm][qmp]") {
    auto sock = socket_path("quit");
    Process p(ferry_run(sock, {"--cmdline", "mode=idle"}));
    next_tick(p);
    struct stat st {};
    REQUIRE(::stat(sock.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0600);
    python_scenario(sock, {"quit"});
    auto rc = p.wait_exit(30s);
    INFO(p.err());
    REQUIRE(rc);
    CHECK(*rc == 0);
    CHECK_FALSE(exists(sock));
}

TEST_CASE("QMP SHUTDOWN events name the cause", "[kvm][qmp]") {
    SECTION("guest power-off") {
        auto sock = socket_path("poweroff");
        Process p(ferry_run(sock, {"--cmdline", "mode=idle ticks=8"}));
        next_tick(p);
        python_scenario(sock, {"shutdown", "guest-shutdown", "true"});
        CHECK(p.wait_exit(30s) == 0);
        CHECK_FALSE(exists(sock));
    }
    SECTION("SIGTERM") {
        auto sock = socket_path("sigterm");
        Process p(ferry_run(sock, {"--cmdline", "mode=idle"}));
        next_tick(p);
        Process py({"/usr/bin/python3", std::string(SOURCE_ROOT) + "/tests/integration/qmp_client.py", sock, "shutdown",
                    "host-signal", "false"});
        REQUIRE(py.wait_line(std::regex("^ready$"), 60s));
        p.signal(SIGTERM);
        auto rc = py.wait_exit(60s);
        INFO(py.err());
        CHECK(rc == 0);
        CHECK(p.wait_exit(30s) == 0);
        CHECK_FALSE(exists(sock));
    }
}

TEST_CASE("QMP bad input gets QEMU's errors and the guest keeps running", "[kvm][qmp]") {
    auto sock = socket_path("bad");
    Process p(ferry_run(sock, {"--cmdline", "mode=idle"}));
    next_tick(p);
    python_scenario(sock, {"protocol"});
    skip_output(p);
    next_tick(p, 30s);  // still ticking
    python_scenario(sock, {"slow"});
    skip_output(p);
    next_tick(p, 30s);
    p.signal(SIGTERM);
    INFO(p.err());
    CHECK(p.wait_exit(30s) == 0);
}

TEST_CASE("socat drives the QMP socket", "[kvm][qmp]") {
    auto sock = socket_path("socat");
    Process p(ferry_run(sock, {"--cmdline", "mode=idle"}));
    next_tick(p);
    Process s({"/bin/sh", "-c",
               "printf '%s\\n' '{\"execute\": \"qmp_capabilities\"}' '{\"execute\": \"query-status\", \"id\": \"socat\"}' | "
               "socat -t 5 - UNIX-CONNECT:" + sock});
    auto rc = s.wait_exit(60s);
    INFO(s.out_text() << s.err());
    REQUIRE(rc == 0);
    const auto& lines = s.out_lines();
    REQUIRE(lines.size() >= 3);
    auto greeting = nlohmann::json::parse(lines[0]);
    CHECK(greeting["QMP"]["version"]["package"].get<std::string>().rfind("ferry ", 0) == 0);
    CHECK(nlohmann::json::parse(lines[1]) == nlohmann::json{{"return", nlohmann::json::object()}});
    auto status = nlohmann::json::parse(lines[2]);
    CHECK(status["id"] == "socat");
    CHECK(status["return"]["status"] == "running");
    CHECK(status["return"]["running"] == true);
    p.signal(SIGTERM);
    CHECK(p.wait_exit(30s) == 0);
}

TEST_CASE("ferry qmp prints the reply and exits 0, 1 or 2", "[kvm][qmp][cli]") {
    auto sock = socket_path("cli");
    Process p(ferry_run(sock, {"--cmdline", "mode=idle"}));
    next_tick(p);

    auto ok = ferry_qmp({"--qmp", sock, "query-status"});
    INFO(ok.out << ok.err);
    REQUIRE(ok.rc == 0);
    CHECK(ok.err.empty());
    auto status = nlohmann::json::parse(ok.out);
    CHECK(status == nlohmann::json{{"status", "running"}, {"running", true}, {"singlestep", false}});

    CHECK(ferry_qmp({"--qmp", sock, "stop"}).rc == 0);
    CHECK(nlohmann::json::parse(ferry_qmp({"--qmp", sock, "query-status"}).out)["status"] == "paused");
    CHECK(ferry_qmp({"--qmp", sock, "cont", "{}"}).rc == 0);
    CHECK(nlohmann::json::parse(ferry_qmp({"--qmp", sock, "query-status"}).out)["status"] == "running");
    auto version = ferry_qmp({"--qmp", sock, "query-version"});
    CHECK(nlohmann::json::parse(version.out)["package"].get<std::string>().rfind("ferry ", 0) == 0);

    auto one_line = [](const CliResult& r, const std::string& needle) {
        INFO("rc " << r.rc << "\nstdout: " << r.out << "\nstderr: " << r.err);
        CHECK(r.err.rfind("ferry: ", 0) == 0);
        CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
        CHECK(r.err.find(needle) != std::string::npos);
        CHECK(r.out.empty());
    };
    auto missing = ferry_qmp({"--qmp", sock, "frobnicate"});
    CHECK(missing.rc == 1);
    one_line(missing, "CommandNotFound: The command frobnicate has not been found");
    auto unexpected = ferry_qmp({"--qmp", sock, "query-status", "{\"verbose\": true}"});
    CHECK(unexpected.rc == 1);
    one_line(unexpected, "GenericError: Parameter 'verbose' is unexpected");
    auto refused = ferry_qmp({"--qmp", sock, "announce-self", R"({"initial": 1, "max": 1, "rounds": 0, "step": 1})"});
    CHECK(refused.rc == 1);
    one_line(refused, "GenericError: announce: rounds 0 is out of range");

    auto bad_json = ferry_qmp({"--qmp", sock, "query-status", "{not json"});
    CHECK(bad_json.rc == 2);
    one_line(bad_json, "ARGS-JSON");
    auto not_object = ferry_qmp({"--qmp", sock, "query-status", "[1]"});
    CHECK(not_object.rc == 2);
    one_line(not_object, "JSON object");
    auto nobody = ferry_qmp({"--qmp", "/tmp/ferry-qmp-nobody-here.sock", "query-status"});
    CHECK(nobody.rc == 2);
    one_line(nobody, "/tmp/ferry-qmp-nobody-here.sock");
    auto no_socket = ferry_qmp({"query-status"});
    CHECK(no_socket.rc == 2);
    CHECK(no_socket.err.find("--qmp") != std::string::npos);

    next_tick(p, 30s);  // the guest ran through all of it
    CHECK(ferry_qmp({"--qmp", sock, "quit"}).rc == 0);
    CHECK(p.wait_exit(30s) == 0);
    CHECK_FALSE(exists(sock));
    auto gone = ferry_qmp({"--qmp", sock, "query-status"});
    CHECK(gone.rc == 2);
}

TEST_CASE("the QMP socket: stale replaced, live or non-socket refused, mode 0600", "[kvm][qmp]") {
    auto sock = socket_path("stale");

    // A stale socket file: bound, never listened on, its owner gone.
    {
        int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
        REQUIRE(fd >= 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, sock.c_str(), sizeof(addr.sun_path) - 1);
        REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
        ::close(fd);
    }
    REQUIRE(is_socket(sock));
    Process p(ferry_run(sock, {"--cmdline", "mode=idle"}));
    next_tick(p);
    struct stat st {};
    REQUIRE(::stat(sock.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0600);
    CHECK(ferry_qmp({"--qmp", sock, "query-status"}).rc == 0);

    // A live one: a second ferry refuses it, with one line, and leaves it alone.
    Process second(ferry_run(sock, {"--cmdline", "mode=idle"}));
    auto rc = second.wait_exit(60s);
    INFO(second.err());
    REQUIRE(rc);
    CHECK(*rc == 1);
    CHECK(second.err().find("in use") != std::string::npos);
    CHECK(std::count(second.err().begin(), second.err().end(), '\n') == 1);
    CHECK(ferry_qmp({"--qmp", sock, "query-status"}).rc == 0);

    // A file that is not a socket is never removed.
    auto plain = socket_path("plain");
    std::ofstream(plain) << "keep me\n";
    Process third(ferry_run(plain, {"--cmdline", "mode=idle"}));
    rc = third.wait_exit(60s);
    INFO(third.err());
    REQUIRE(rc);
    CHECK(*rc == 1);
    CHECK(third.err().find("not a socket") != std::string::npos);
    CHECK(exists(plain));
    ::unlink(plain.c_str());

    p.signal(SIGTERM);
    CHECK(p.wait_exit(30s) == 0);
    CHECK_FALSE(exists(sock));
}

TEST_CASE("QMP system_reset boots the guest again with a RESET event; a paused guest stays paused", "[kvm][qmp][reset][noxsave]") {
    auto sock = socket_path("reset");
    std::string img = "/tmp/ferry-qmp-" + std::to_string(::getpid()) + "-reset.img";
    std::ofstream(img, std::ios::binary).seekp((1 << 20) - 1).put('\0');
    Process p(ferry_run(sock, {"--cpus", "2", "--disk", img, "--cmdline", "mode=blk wss=256K seed=9 cpus=2"}));
    REQUIRE(p.wait_line(std::regex("^guest: blk ok=[1-9]"), kBoot));
    python_scenario(sock, {"reset"});
    // The guest starts over: both CPUs come up again (the AP waits for INIT/SIPI as at
    // power-on), its driver sets the disk up again from status 0 and verifies from scratch.
    CHECK(p.wait_line(std::regex("^guest: cpus=2$"), 30s));
    CHECK(p.wait_line(std::regex("^guest: blk sectors=512 "), 30s));
    CHECK(p.wait_line(std::regex("^guest: ready$"), 30s));
    CHECK(p.wait_line(std::regex("^guest: tick=1 "), 30s));
    CHECK(p.wait_line(std::regex("^guest: blk ok=[1-9][0-9]* bad=0 ioerr=0 "), 30s));
    // Paused: reset, still paused, nothing runs until cont.
    CHECK(ferry_qmp({"--qmp", sock, "stop"}).rc == 0);
    auto reset = ferry_qmp({"--qmp", sock, "system_reset"});
    CHECK(reset.rc == 0);
    auto status = ferry_qmp({"--qmp", sock, "query-status"});
    CHECK(status.out.find("\"paused\"") != std::string::npos);
    skip_output(p);
    CHECK_FALSE(p.wait_line(std::regex("^guest: "), 2s));
    CHECK(ferry_qmp({"--qmp", sock, "cont"}).rc == 0);
    CHECK(p.wait_line(std::regex("^guest: ready$"), 30s));
    CHECK(p.wait_line(std::regex("^guest: blk ok=[1-9][0-9]* bad=0 ioerr=0 "), 30s));
    p.signal(SIGTERM);
    CHECK(p.wait_exit(30s) == 0);
    INFO(p.out_text() << p.err());
    CHECK(std::count(p.out_lines().begin(), p.out_lines().end(), "guest: ready") == 3);
    ::unlink(img.c_str());
}
