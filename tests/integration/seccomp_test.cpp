// Seccomp (base/seccomp.hpp): every thread of `ferry run` runs under its kind's filter
// (/proc/PID/task/*/status says "Seccomp: 2"), and a call outside it ends ferry with
// SIGSYS and a message naming the thread kind (a test-only hook,
// FERRY_TEST_FORBIDDEN_SYSCALL=<kind>, makes a thread of that kind call acct(2) once
// confined). The rest of the KVM suite runs with the filters on, as users do.
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>

#include "base/seccomp.hpp"
#include "migration_helpers.hpp"
#include "process.hpp"

using namespace ferry::test;
using namespace std::chrono_literals;

namespace {

// Thread name -> its "Seccomp:" mode, for every thread of `pid`.
std::multimap<std::string, int> seccomp_modes(pid_t pid) {
    std::multimap<std::string, int> out;
    for (const auto& t : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
        std::string name, line;
        std::ifstream(t.path() / "comm") >> name;
        std::ifstream st(t.path() / "status");
        int mode = -1;
        while (std::getline(st, line))
            if (line.rfind("Seccomp:", 0) == 0) mode = std::stoi(line.substr(8));
        out.emplace(name, mode);
    }
    return out;
}

std::set<std::string> names(const std::multimap<std::string, int>& m) {
    std::set<std::string> out;
    for (const auto& [n, mode] : m) out.insert(n);
    return out;
}

// Every thread of `pid` is confined and the `expected_names` are among them; polls for
// up to 10 s, since threads confine themselves as they finish setting up (the main
// thread just after it printed what a caller may be waiting for).
void check_all_confined(pid_t pid, const std::set<std::string>& expected_names) {
    std::multimap<std::string, int> modes;
    auto done = [&] {
        modes = seccomp_modes(pid);
        auto got = names(modes);
        for (const auto& [name, mode] : modes)
            if (mode != 2) return false;
        for (const auto& n : expected_names)
            if (!got.count(n)) return false;
        return true;
    };
    for (auto deadline = std::chrono::steady_clock::now() + 10s; !done() && std::chrono::steady_clock::now() < deadline;)
        std::this_thread::sleep_for(50ms);
    for (const auto& [name, mode] : modes) {
        INFO("thread " << name);
        CHECK(mode == 2);
    }
    auto got = names(modes);
    for (const auto& n : expected_names) {
        INFO("expected a thread named " << n);
        CHECK(got.count(n) == 1);
    }
}

std::string image() {
    std::string path = "/tmp/ferry-seccomp-" + std::to_string(::getpid()) + ".img";
    std::ofstream(path, std::ios::binary | std::ios::trunc).close();
    REQUIRE(::truncate(path.c_str(), 1 << 20) == 0);
    return path;
}

}  // namespace

TEST_CASE("every thread of ferry run is under its seccomp filter", "[kvm][seccomp]") {
    auto disk = image();
    std::vector<std::string> argv{ferry_bin(), "run", "--kernel", testguest_elf(), "--mem", "64M", "--cpus", "2",
                                  "--disk", disk, "--cmdline", "mode=blk wss=256K"};
    std::string tap;
    if (::geteuid() == 0) {
        tap = "fys" + std::to_string(::getpid() % 100000);
        argv.insert(argv.end(), {"--net", "tap:" + tap});
    }
    Process p(argv);
    auto tick = p.wait_line(std::regex("^guest: blk ok="), 60s);
    INFO(p.out_text() << p.err());
    REQUIRE(tick);
    std::set<std::string> expected{"ferry", "vcpu", "virtio-blk"};
    if (!tap.empty()) expected.insert("virtio-net");
    check_all_confined(p.pid(), expected);
    // The guest goes on under the filters: more blk rounds complete.
    auto more = p.wait_line(std::regex("^guest: blk ok="), 60s);
    CHECK(more);
    p.signal(SIGTERM);
    CHECK(p.wait_exit(30s) == 0);
    ::unlink(disk.c_str());
}

TEST_CASE("an incoming migration's threads are confined too", "[kvm][seccomp]") {
    int port = 0;
    auto dst = destination("64M", 1, port);
    // The receiver waits for the source on its own thread.
    check_all_confined(dst->pid(), {"ferry", "migration"});
    dst->signal(SIGTERM);
    CHECK(dst->wait_exit(30s) == 0);
}

TEST_CASE("a system call outside a thread's filter ends ferry with SIGSYS", "[kvm][seccomp]") {
    const std::string kind = GENERATE(as<std::string>{}, "main", "vcpu", "virtio-blk");
    auto disk = image();
    Process p({"/usr/bin/env", "FERRY_TEST_FORBIDDEN_SYSCALL=" + kind, ferry_bin(), "run", "--kernel", testguest_elf(),
               "--mem", "64M", "--disk", disk, "--cmdline", "mode=blk wss=256K"});
    if (ferry::seccomp::sanitized_build()) {
        // There "on" acts as "log" (base/seccomp.hpp): the guest goes on.
        INFO(kind << ": " << p.err());
        CHECK(p.wait_line(std::regex("^guest: blk ok="), 60s));
        p.signal(SIGTERM);
        CHECK(p.wait_exit(30s) == 0);
        ::unlink(disk.c_str());
        return;
    }
    auto status = p.wait_exit(60s);
    INFO(kind << ": " << p.err());
    REQUIRE(status);
    CHECK(*status == 128 + SIGSYS);
    CHECK(p.err().find("a " + kind + " thread made system call " + std::to_string(SYS_acct)) != std::string::npos);
    ::unlink(disk.c_str());
}

TEST_CASE("--seccomp log lets a forbidden call through, --seccomp off installs no filter", "[kvm][seccomp]") {
    Process logged({"/usr/bin/env", "FERRY_TEST_FORBIDDEN_SYSCALL=vcpu", ferry_bin(), "run", "--kernel", testguest_elf(),
                    "--mem", "64M", "--seccomp", "log", "--cmdline", "mode=idle"});
    auto tick = logged.wait_line(std::regex("^guest: tick=2 "), 60s);
    INFO(logged.err());
    CHECK(tick);
    check_all_confined(logged.pid(), {"ferry", "vcpu"});
    logged.signal(SIGTERM);
    CHECK(logged.wait_exit(30s) == 0);

    Process off({ferry_bin(), "run", "--kernel", testguest_elf(), "--mem", "64M", "--seccomp", "off", "--cmdline", "mode=idle"});
    REQUIRE(off.wait_line(std::regex("^guest: tick=1 "), 60s));
    for (const auto& [name, mode] : seccomp_modes(off.pid())) {
        INFO("thread " << name);
        CHECK(mode == 0);
    }
    off.signal(SIGTERM);
    CHECK(off.wait_exit(30s) == 0);
}
