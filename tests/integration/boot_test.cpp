// Boot the test guest under ferry (and QEMU microvm) and check its serial lines.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "process.hpp"
#include "tests/common/elf_builder.hpp"

using namespace ferry::test;
using namespace std::chrono_literals;

namespace {

std::vector<std::string> ferry_run(std::vector<std::string> extra) {
    std::vector<std::string> argv{ferry_bin(), "run", "--kernel", testguest_elf()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
}

// Guests here take a few seconds to populate their working set (first touch of a
// page costs ~10-30 us on this host's KVM); timeouts are generous, never asserted on.
constexpr auto kBoot = 60s;

void check_ticks_clean(Process& p, int ticks) {
    for (int t = 1; t <= ticks; ++t) {
        auto tick = p.wait_line(std::regex("^guest: tick=" + std::to_string(t) + " "), kBoot);
        INFO(p.out_text() << p.err());
        REQUIRE(tick);
        CHECK(tick->find("corrupt=0") != std::string::npos);
    }
}

}  // namespace

TEST_CASE("the test guest boots in every mode and powers off", "[kvm][boot]") {
    for (std::string mode : {"idle", "dirty", "verify", "tlb", "ksm"}) {
        DYNAMIC_SECTION("mode=" << mode) {
            Process p(ferry_run({"--mem", "128M", "--cmdline", "mode=" + mode + " wss=16M rate=4M ticks=2"}));
            REQUIRE(p.wait_line(std::regex("^guest: ready$"), kBoot));
            check_ticks_clean(p, 2);
            auto rc = p.wait_exit(kBoot);
            INFO(p.out_text() << p.err());
            REQUIRE(rc);
            CHECK(*rc == 0);
            CHECK(p.out_text().find("CORRUPT") == std::string::npos);
            if (mode == "tlb") CHECK(p.out_text().find("guest: tlb ns_per_access=") != std::string::npos);
        }
    }
}

TEST_CASE("two vCPUs run the workload", "[kvm][boot][smp]") {
    Process p(ferry_run({"--cpus", "2", "--mem", "128M", "--cmdline", "mode=verify wss=16M rate=4M cpus=2 ticks=2"}));
    auto cpus = p.wait_line(std::regex("^guest: cpus="), kBoot);
    INFO(p.out_text() << p.err());
    REQUIRE(cpus);
    CHECK(*cpus == "guest: cpus=2");
    REQUIRE(p.wait_line(std::regex("^guest: ready$"), kBoot));
    check_ticks_clean(p, 2);
    REQUIRE(p.wait_exit(kBoot) == 0);
}

TEST_CASE("SIGTERM and SIGINT stop a running guest cleanly", "[kvm][signal]") {
    for (int sig : {SIGTERM, SIGINT}) {
        DYNAMIC_SECTION("signal " << sig) {
            Process p(ferry_run({"--mem", "64M", "--cmdline", "mode=idle"}));
            REQUIRE(p.wait_line(std::regex("^guest: tick=1 "), kBoot));
            p.signal(sig);
            auto rc = p.wait_exit(20s);
            INFO(p.err());
            REQUIRE(rc);
            CHECK(*rc == 0);
            CHECK(p.err().find("terminating on signal " + std::to_string(sig)) != std::string::npos);
        }
    }
}

TEST_CASE("the console can go to a file", "[kvm][serial]") {
    std::string path = "/tmp/ferry-serial-test-" + std::to_string(::getpid()) + ".log";
    Process p(ferry_run({"--mem", "64M", "--serial", "file:" + path, "--cmdline", "mode=idle ticks=1"}));
    REQUIRE(p.wait_exit(kBoot) == 0);
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    CHECK(ss.str().find("guest: ready") != std::string::npos);
    CHECK(ss.str().find("guest: tick=1 ") != std::string::npos);
    CHECK(p.out_text().empty());
    ::unlink(path.c_str());
}

TEST_CASE("a guest error powers off with its status", "[kvm][boot]") {
    Process p(ferry_run({"--mem", "64M", "--cmdline", "mode=verify wss=1G"}));
    auto rc = p.wait_exit(kBoot);
    INFO(p.out_text() << p.err());
    REQUIRE(rc);
    CHECK(*rc == 16 + 2);  // the guest's code 2, clear of ferry's own statuses
    CHECK(p.err().find("guest powered off with code 2 (ferry exits with 18)") != std::string::npos);
    CHECK(p.out_text().find("guest: error wss too large") != std::string::npos);
}

TEST_CASE("a triple fault ends ferry run with the crash status", "[kvm][crash]") {
    // ud2 at the PVH entry with no IDT: #UD -> #GP -> #DF -> triple fault.
    std::string path = "/tmp/ferry-triple-" + std::to_string(::getpid()) + ".elf";
    REQUIRE(write_raw_kernel(path, {0x0f, 0x0b}));
    Process p({ferry_bin(), "run", "--kernel", path, "--mem", "16M"});
    auto rc = p.wait_exit(kBoot);
    ::unlink(path.c_str());
    INFO(p.err());
    REQUIRE(rc);
    CHECK(*rc == 3);
    CHECK(p.err().find("triple fault") != std::string::npos);
}

// -arch-capabilities: QEMU 7.2 asserts when a KVM refuses MSR_IA32_ARCH_CAPABILITIES
// (kvm_pvm does), and the test guest does not look at it.
TEST_CASE("the test guest boots under QEMU microvm too", "[kvm][qemu]") {
    if (::access("/usr/bin/qemu-system-x86_64", X_OK) != 0) {
        WARN("qemu-system-x86_64 is not installed: skipping the QEMU half (scripts/install-deps installs it)");
        return;
    }
    Process p({"/usr/bin/qemu-system-x86_64", "-M", "microvm,x-option-roms=off,rtc=off", "-enable-kvm", "-cpu", "host,-arch-capabilities",
               "-m", "128M", "-smp", "2", "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio",
               "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel", testguest_elf(), "-append",
               "mode=verify wss=16M rate=4M cpus=2 ticks=2"});
    REQUIRE(p.wait_line(std::regex("^guest: cpus=2$"), kBoot));
    REQUIRE(p.wait_line(std::regex("^guest: ready$"), kBoot));
    check_ticks_clean(p, 2);
    auto rc = p.wait_exit(kBoot);
    INFO(p.err());
    REQUIRE(rc);
    CHECK(*rc == 1);  // isa-debug-exit reports (0 << 1) | 1
}

TEST_CASE("a guest's own reset boots it again; with --no-reboot ferry exits", "[kvm][boot][reset]") {
    // 32-bit PVH entry: print 'A' on the serial port, reset through the i8042 (0xfe to
    // port 0x64), then hlt. Each boot prints one 'A'.
    std::string path = "/tmp/ferry-reset-" + std::to_string(::getpid()) + ".elf";
    REQUIRE(write_raw_kernel(path, {0x66, 0xba, 0xf8, 0x03, 0xb0, 0x41, 0xee, 0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd}));
    {
        Process p({ferry_bin(), "run", "--kernel", path, "--mem", "16M"});
        auto booted = [&] {
            std::string out = p.out_text();
            return std::count(out.begin(), out.end(), 'A');
        };
        auto deadline = std::chrono::steady_clock::now() + kBoot;
        while (booted() < 3 && std::chrono::steady_clock::now() < deadline) p.wait_line(std::regex("^never$"), 200ms);
        INFO(p.out_text() << p.err());
        CHECK(booted() >= 3);
        CHECK(p.out_text().find_first_not_of('A') == std::string::npos);
        p.signal(SIGTERM);
        CHECK(p.wait_exit(30s) == 0);
    }
    {
        Process p({ferry_bin(), "run", "--kernel", path, "--mem", "16M", "--no-reboot"});
        auto rc = p.wait_exit(kBoot);
        INFO(p.out_text() << p.err());
        CHECK(rc == 0);
        CHECK(p.out_text() == "A");
        CHECK(p.err().find("guest reset through the i8042; exiting (--no-reboot)") != std::string::npos);
    }
    ::unlink(path.c_str());
}

TEST_CASE("SIGTERM ends ferry even when nobody reads the guest's console", "[kvm][signal][serial]") {
    // The guest writes to the serial port without pause; the console is a FIFO that the
    // test opens and never reads, so the vCPU soon sits in a blocked write. The stop must
    // still reach it (the byte in flight is dropped) and ferry exits.
    const std::string base = "/tmp/ferry-stall-" + std::to_string(::getpid());
    REQUIRE(write_raw_kernel(base + ".elf", kSerialCounterLoop));
    REQUIRE(::mkfifo((base + ".fifo").c_str(), 0600) == 0);
    int reader = ::open((base + ".fifo").c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    REQUIRE(reader >= 0);
    Process p({ferry_bin(), "run", "--kernel", base + ".elf", "--mem", "16M", "--serial", "file:" + base + ".fifo"});
    std::this_thread::sleep_for(1500ms);  // the FIFO (64 KiB) is full long before
    CHECK_FALSE(p.wait_exit(0ms));
    p.signal(SIGTERM);
    auto rc = p.wait_exit(30s);
    INFO(p.err());
    CHECK(rc == 0);
    ::close(reader);
    ::unlink((base + ".fifo").c_str());
    ::unlink((base + ".elf").c_str());
}
