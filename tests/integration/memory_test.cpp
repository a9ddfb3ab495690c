// Guest memory on a real guest: THP, KSM, NUMA placement, hugetlbfs, prealloc and
// zones, each checked through `ferry run --memory-report` (printed on stderr when
// the guest stops, here after SIGTERM once the working set is populated).
//
// The KSM and hugetlbfs tests change host-wide settings (/sys/kernel/mm/ksm/*,
// /proc/sys/vm/nr_hugepages) and put the old values back when they end, also on
// failure (HostSetting). ferry itself never writes them.
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <sstream>
#include <thread>

#include "host_setting.hpp"
#include "process.hpp"

using namespace ferry::test;
using namespace std::chrono_literals;

namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr auto kBoot = 90s;

std::vector<std::string> ferry_run(std::vector<std::string> extra) {
    std::vector<std::string> argv{ferry_bin(), "run", "--kernel", testguest_elf()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
}

using Fields = std::map<std::string, std::string>;

// "ferry: memory: region slot=0 ... k=v" lines of the report, as maps.
std::vector<Fields> report_regions(const std::string& err) {
    std::vector<Fields> out;
    std::istringstream in(err);
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("ferry: memory: region ", 0) != 0) continue;
        Fields f;
        std::istringstream words(line.substr(22));
        std::string w;
        while (words >> w) {
            auto eq = w.find('=');
            if (eq != std::string::npos) f[w.substr(0, eq)] = w.substr(eq + 1);
        }
        out.push_back(std::move(f));
    }
    return out;
}

uint64_t num(const Fields& f, const std::string& key) {
    auto it = f.find(key);
    REQUIRE(it != f.end());
    return std::stoull(it->second);
}

// "0:16384,1:12" -> {0: 16384, 1: 12}
std::map<int, uint64_t> nodes_of(const Fields& f) {
    std::map<int, uint64_t> out;
    auto it = f.find("pages_per_node");
    REQUIRE(it != f.end());
    if (it->second == "none") return out;
    std::istringstream in(it->second);
    std::string item;
    while (std::getline(in, item, ',')) {
        auto colon = item.find(':');
        out[std::stoi(item.substr(0, colon))] = std::stoull(item.substr(colon + 1));
    }
    return out;
}

// Boots the guest, waits for `guest: ready`, stops it with SIGTERM and returns the
// report's region lines (the guest ran; ferry exited 0).
std::vector<Fields> run_until_ready(Process& p) {
    auto ready = p.wait_line(std::regex("^guest: ready$"), kBoot);
    INFO("stdout: " << p.out_text() << "\nstderr: " << p.err());
    REQUIRE(ready);
    p.signal(SIGTERM);
    auto rc = p.wait_exit(60s);
    REQUIRE(rc);
    CHECK(*rc == 0);
    auto regions = report_regions(p.err());
    REQUIRE_FALSE(regions.empty());
    return regions;
}

void expect_clean_error(std::vector<std::string> args, const std::string& needle) {
    Process p(ferry_run(std::move(args)));
    auto rc = p.wait_exit(60s);
    INFO("stderr: " << p.err() << "\nstdout: " << p.out_text());
    REQUIRE(rc);
    CHECK(*rc != 0);
    CHECK(*rc < 128);
    CHECK(p.err().rfind("ferry: ", 0) == 0);
    CHECK(std::count(p.err().begin(), p.err().end(), '\n') == 1);
    CHECK(p.err().find(needle) != std::string::npos);
    CHECK(p.out_text().find("guest:") == std::string::npos);  // refused before the guest started
}

std::string thp_mode() {
    auto line = read_setting("/sys/kernel/mm/transparent_hugepage/enabled").value_or("[never]");
    auto a = line.find('['), b = line.find(']');
    return a == std::string::npos ? line : line.substr(a + 1, b - a - 1);
}


}  // namespace

TEST_CASE("THP on backs a dirtied 512 MiB working set with huge pages", "[kvm][memory][thp]") {
    if (thp_mode() == "never") {
        WARN("host THP mode is 'never': skipping");
        return;
    }
    Process p(ferry_run({"--mem", "768M", "--thp", "on", "--memory-report", "--cmdline", "mode=dirty wss=512M rate=0"}));
    auto regions = run_until_ready(p);
    INFO(p.err());
    REQUIRE(regions.size() == 1);
    CHECK(regions[0]["thp"] == "on");
    CHECK(num(regions[0], "size") == 768 * kMiB);
    CHECK(num(regions[0], "thp_bytes") >= 512 * kMiB * 9 / 10);
    CHECK(num(regions[0], "rss_bytes") >= 512 * kMiB);
}

TEST_CASE("THP off leaves guest RAM in 4 KiB pages", "[kvm][memory][thp]") {
    Process p(ferry_run({"--mem", "128M", "--thp", "off", "--memory-report", "--cmdline", "mode=dirty wss=48M rate=0"}));
    auto regions = run_until_ready(p);
    INFO(p.err());
    REQUIRE(regions.size() == 1);
    CHECK(regions[0]["thp"] == "off");
    CHECK(num(regions[0], "rss_bytes") >= 48 * kMiB);
    CHECK(num(regions[0], "thp_bytes") <= 128 * kMiB / 100);
}

TEST_CASE("KSM merges identical guests and their data stays correct", "[kvm][memory][ksm]") {
    HostSetting run("/sys/kernel/mm/ksm/run");
    HostSetting pages("/sys/kernel/mm/ksm/pages_to_scan");
    HostSetting sleep("/sys/kernel/mm/ksm/sleep_millisecs");
    if (!run.exists()) {
        WARN("this kernel has no KSM (/sys/kernel/mm/ksm is missing): skipping");
        return;
    }

    SECTION("with ksmd stopped, --ksm on warns and the report says so") {
        REQUIRE(run.set("0"));
        Process p(ferry_run({"--ksm", "on", "--mem", "64M", "--memory-report", "--cmdline", "mode=idle ticks=1"}));
        auto rc = p.wait_exit(kBoot);
        INFO(p.err());
        REQUIRE(rc == 0);
        CHECK(p.err().find("ferry: warning: KSM is on, but ksmd is not running") != std::string::npos);
        CHECK(p.err().find("ksmd=stopped(run=0)") != std::string::npos);
        auto regions = report_regions(p.err());
        REQUIRE(regions.size() == 1);
        CHECK(regions[0]["ksm"] == "on");
    }

    SECTION("two guests with identical content share pages, then rewrite and verify them") {
        REQUIRE(pages.set("2000"));
        REQUIRE(sleep.set("10"));
        REQUIRE(run.set("1"));
        // verify mode: page content depends on (page index, generation, seed) only, so
        // the two guests hold identical pages; rate=4M rewrites (and so un-merges)
        // about 1000 pages a second while every page is re-read and checked.
        std::vector<std::string> args{"--ksm", "on", "--mem", "128M", "--memory-report", "--cmdline",
                                      "mode=verify wss=64M rate=4M seed=7"};
        Process a(ferry_run(args)), b(ferry_run(args));
        for (Process* p : {&a, &b}) {
            INFO(p->err());
            REQUIRE(p->wait_line(std::regex("^guest: ready$"), kBoot));
        }
        auto merged = [](pid_t pid) {
            auto v = read_setting("/proc/" + std::to_string(pid) + "/ksm_merging_pages");
            return v ? std::stoull(*v) : 0ull;
        };
        auto deadline = std::chrono::steady_clock::now() + 60s;
        while (std::chrono::steady_clock::now() < deadline && (merged(a.pid()) < 1000 || merged(b.pid()) < 1000)) {
            a.drain(100ms);
            b.drain(100ms);
        }
        INFO("merged a=" << merged(a.pid()) << " b=" << merged(b.pid()));
        CHECK(merged(a.pid()) >= 1000);
        CHECK(merged(b.pid()) >= 1000);
        // Three more seconds of rewrites and verification over merged pages.
        for (Process* p : {&a, &b}) {
            auto last = p->wait_line(std::regex("^guest: tick="), kBoot);
            REQUIRE(last);
            int n = std::stoi(last->substr(12));
            for (int t = n + 1; t <= n + 3; ++t) {
                auto tick = p->wait_line(std::regex("^guest: tick=" + std::to_string(t) + " "), kBoot);
                INFO(p->out_text() << p->err());
                REQUIRE(tick);
                CHECK(tick->find("corrupt=0") != std::string::npos);
            }
        }
        for (Process* p : {&a, &b}) {
            p->signal(SIGTERM);
            auto rc = p->wait_exit(60s);
            INFO(p->err());
            REQUIRE(rc == 0);
            CHECK(p->out_text().find("CORRUPT") == std::string::npos);
            auto regions = report_regions(p->err());
            REQUIRE(regions.size() == 1);
            CHECK(regions[0]["ksm"] == "on");
            CHECK(num(regions[0], "ksm_merged_pages") > 0);
            CHECK(p->err().find("ksmd=running") != std::string::npos);
        }
    }
}

TEST_CASE("NUMA bind to node 0 places every touched page on node 0", "[kvm][memory][numa]") {
    Process p(ferry_run({"--numa-node", "0:bind", "--mem", "128M", "--memory-report", "--cmdline", "mode=dirty wss=32M rate=0"}));
    auto regions = run_until_ready(p);
    INFO(p.err());
    REQUIRE(regions.size() == 1);
    CHECK(regions[0]["numa_requested"] == "bind:0");
    CHECK(regions[0]["numa_policy"] == "bind:0");
    CHECK(num(regions[0], "numa_stride") == 4096);  // 128 MiB: every page sampled
    auto nodes = nodes_of(regions[0]);
    REQUIRE(nodes.size() == 1);
    CHECK(nodes.begin()->first == 0);
    CHECK(nodes.begin()->second >= 32 * kMiB / 4096);
}

TEST_CASE("absent NUMA nodes and impossible policies fail before the guest starts", "[kvm][memory][numa]") {
    expect_clean_error({"--numa-node", "99", "--mem", "64M"}, "NUMA node 99 does not exist");
    if (!std::filesystem::exists("/sys/devices/system/node/node1"))
        expect_clean_error({"--numa-node", "1:preferred", "--mem", "64M"}, "NUMA node 1 does not exist");
    expect_clean_error({"--numa-node", "0:local", "--mem", "64M"}, "--numa-node");
    expect_clean_error({"--ksm", "on", "--memory-backend", "memfd", "--mem", "64M"}, "--ksm on: KSM merges only private anonymous memory (the anon memory backend), not memfd");
}

TEST_CASE("hugetlbfs needs reserved huge pages, and runs with them", "[kvm][memory][hugetlbfs]") {
    HostSetting nr("/proc/sys/vm/nr_hugepages");
    REQUIRE(nr.exists());
    std::vector<std::string> args{"--memory-backend", "hugetlbfs", "--mem", "64M", "--memory-report", "--cmdline",
                                  "mode=dirty wss=16M rate=0 ticks=1"};
    SECTION("none reserved") {
        REQUIRE(nr.set("0"));
        expect_clean_error(args, "not enough free 2 MiB huge pages");
    }
    SECTION("too few reserved (16 of 32 needed)") {
        REQUIRE(nr.set("16"));
        expect_clean_error(args, "not enough free 2 MiB huge pages");
    }
    SECTION("enough reserved") {
        REQUIRE(nr.set("40"));
        if (std::stoi(nr.now().value_or("0")) < 32) {
            WARN("the host could not reserve 32 huge pages: skipping");
            return;
        }
        Process p(ferry_run(args));
        auto rc = p.wait_exit(kBoot);
        INFO(p.out_text() << p.err());
        REQUIRE(rc == 0);
        CHECK(p.out_text().find("guest: tick=1 ") != std::string::npos);
        auto regions = report_regions(p.err());
        REQUIRE(regions.size() == 1);
        CHECK(regions[0]["backend"] == "hugetlbfs");
        CHECK(num(regions[0], "hugetlb_bytes") >= 16 * kMiB);
        CHECK(num(regions[0], "thp_bytes") == 0);
    }
}

TEST_CASE("--prealloc populates guest RAM before boot with progress", "[kvm][memory][prealloc]") {
    Process p(ferry_run({"--prealloc", "--mem", "256M", "--memory-report", "--cmdline", "mode=idle ticks=1"}));
    auto rc = p.wait_exit(kBoot);
    INFO(p.err());
    REQUIRE(rc == 0);
    CHECK(p.err().find("ferry: preallocating 256 MiB of guest RAM: 0%\n") != std::string::npos);
    CHECK(p.err().find("ferry: preallocating 256 MiB of guest RAM: 100%\n") != std::string::npos);
    CHECK(p.err().find("ferry: preallocated 256 MiB of guest RAM in ") != std::string::npos);
    auto regions = report_regions(p.err());
    REQUIRE(regions.size() == 1);
    CHECK(regions[0]["prealloc"] == "on");
    CHECK(num(regions[0], "rss_bytes") == 256 * kMiB);
}

TEST_CASE("TOML memory zones become regions with their own NUMA policy", "[kvm][memory][numa]") {
    auto cfg = write_temp("zones.toml", "memory-report = true\ncmdline = \"mode=dirty wss=16M rate=0 ticks=1\"\n"
                                        "[[memory-zone]]\nsize = \"64M\"\nhost-nodes = [0]\npolicy = \"bind\"\n"
                                        "[[memory-zone]]\nsize = \"32M\"\n");
    Process p(ferry_run({"--config", cfg}));
    auto rc = p.wait_exit(kBoot);
    ::unlink(cfg.c_str());
    INFO(p.out_text() << p.err());
    REQUIRE(rc == 0);
    auto regions = report_regions(p.err());
    REQUIRE(regions.size() == 2);
    CHECK(regions[0]["gpa"] == "0x0");
    CHECK(num(regions[0], "size") == 64 * kMiB);
    CHECK(regions[0]["numa_policy"] == "bind:0");
    CHECK(regions[1]["gpa"] == "0x4000000");
    CHECK(num(regions[1], "size") == 32 * kMiB);
    CHECK(regions[1]["zone"] == "1");
    CHECK(regions[1]["numa_policy"] == "default");
}
