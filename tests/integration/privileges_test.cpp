// Least privilege (base/privileges.hpp): once set up, every thread of `ferry run` has
// given up its capabilities, whether it ran as root or as a user who lent it
// CAP_NET_ADMIN through the ambient set; an incoming migration keeps at most what
// userfaultfd needs. Checked in /proc/PID/task/*/status, thread by thread.
#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "base/privileges.hpp"
#include "process.hpp"

using namespace ferry::test;
using namespace std::chrono_literals;

namespace {

struct ThreadCaps {
    std::string name;
    std::map<std::string, uint64_t> caps;  // CapInh, CapPrm, CapEff, CapBnd, CapAmb
};

std::vector<ThreadCaps> thread_caps(pid_t pid) {
    std::vector<ThreadCaps> out;
    for (const auto& t : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
        ThreadCaps tc;
        std::ifstream(t.path() / "comm") >> tc.name;
        std::ifstream st(t.path() / "status");
        std::string line;
        while (std::getline(st, line))
            if (line.rfind("Cap", 0) == 0 || line.rfind("NoNewPrivs", 0) == 0) {
                auto colon = line.find(':');
                tc.caps[line.substr(0, colon)] = std::stoull(line.substr(colon + 1), nullptr, 16);
            }
        out.push_back(std::move(tc));
    }
    return out;
}

// Every thread holds exactly `keep` (effective and permitted), nothing inheritable or
// ambient, and no_new_privs; and, where ferry could shrink it (`bounding`: it had
// CAP_SETPCAP, as root), a bounding set within `keep`.
void check_threads(pid_t pid, uint64_t keep, size_t at_least, bool bounding = true) {
    auto threads = thread_caps(pid);
    CHECK(threads.size() >= at_least);
    for (const auto& t : threads) {
        INFO("thread " << t.name);
        CHECK(t.caps.at("CapEff") == keep);
        CHECK(t.caps.at("CapPrm") == keep);
        CHECK(t.caps.at("CapInh") == 0);
        CHECK(t.caps.at("CapAmb") == 0);
        CHECK(t.caps.at("NoNewPrivs") == 1);
        if (bounding) CHECK((t.caps.at("CapBnd") & ~keep) == 0);
    }
}

std::string image(const std::string& name) {
    std::string path = "/tmp/ferry-priv-" + std::to_string(::getpid()) + "-" + name + ".img";
    std::ofstream(path, std::ios::binary | std::ios::trunc).close();
    REQUIRE(::truncate(path.c_str(), 1 << 20) == 0);
    return path;
}

}  // namespace

TEST_CASE("after setup every thread of ferry run has given up its capabilities", "[kvm][privileges]") {
    if (::geteuid() != 0) {
        WARN("not root: ferry has no capabilities to give up here");
        return;
    }
    auto disk = image("disk");
    const std::string tap = "fyp" + std::to_string(::getpid() % 100000);
    std::vector<std::string> argv{ferry_bin(), "run", "--kernel", testguest_elf(), "--mem", "64M", "--cpus", "2",
                                  "--disk", disk, "--cmdline", "mode=blk wss=256K"};
    // ferry creates the tap itself (CAP_NET_ADMIN at setup), then drops it.
    argv.insert(argv.end(), {"--net", "tap:" + tap});
    Process p(argv);
    auto tick = p.wait_line(std::regex("^guest: blk ok="), 60s);
    INFO(p.out_text() << p.err());
    REQUIRE(tick);
    check_threads(p.pid(), 0, 4);  // main, 2 vCPUs, the disk's and the card's workers
    p.signal(SIGTERM);
    CHECK(p.wait_exit(30s) == 0);
    ::unlink(disk.c_str());
}

TEST_CASE("a user who lends ferry CAP_NET_ADMIN through the ambient set keeps none of it", "[kvm][privileges]") {
    if (::geteuid() != 0) {
        WARN("not root: cannot start ferry as another user with ambient capabilities here");
        return;
    }
    group* kvm = ::getgrnam("kvm");
    struct stat st {};
    REQUIRE(::stat("/dev/kvm", &st) == 0);
    // nobody, in /dev/kvm's group, with CAP_NET_ADMIN ambient: ferry creates a tap.
    const std::string groups = std::to_string(kvm ? kvm->gr_gid : st.st_gid);
    const std::string tap = "fyq" + std::to_string(::getpid() % 100000);
    Process p({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--groups=" + groups, "--inh-caps=+net_admin",
               "--ambient-caps=+net_admin", "--", ferry_bin(), "run", "--kernel", testguest_elf(), "--mem", "64M", "--net",
               "tap:" + tap, "--cmdline", "mode=idle"});
    auto tick = p.wait_line(std::regex("^guest: tick=1 "), 60s);
    INFO(p.out_text() << p.err());
    REQUIRE(tick);
    check_threads(p.pid(), 0, 3, false);  // main, the vCPU, the card's worker; no CAP_SETPCAP for the bounding set
    p.signal(SIGTERM);
    CHECK(p.wait_exit(30s) == 0);
}

TEST_CASE("an incoming migration keeps at most what userfaultfd needs", "[kvm][privileges]") {
    if (::geteuid() != 0) {
        WARN("not root: ferry has no capabilities to give up here");
        return;
    }
    Process dst({ferry_bin(), "run", "--mem", "64M", "--incoming", "tcp:127.0.0.1:0"});
    auto port = incoming_port(dst);
    INFO(dst.err());
    REQUIRE(port);
    // CAP_SYS_PTRACE only when vm.unprivileged_userfaultfd is 0 and /dev/userfaultfd is
    // not open to root by its mode; else nothing.
    const uint64_t keep = ferry::privileges::runtime_needs(true);
    INFO("keeps " << ferry::privileges::names(keep));
    check_threads(dst.pid(), keep, 1);
    dst.signal(SIGTERM);
    CHECK(dst.wait_exit(30s) == 0);
}
