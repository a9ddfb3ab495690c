// Memory policy and reporting without KVM: option grammar, zone layout, smaps
// parsing, and the real steps (THP, NUMA, collapse, prealloc) on small anonymous
// regions of this process, read back through the report.
#include <catch2/catch.hpp>

#include <cstring>
#include <fstream>

#include "cli/messages.hpp"
#include "cli/specs.hpp"
#include "cli/run_options.hpp"
#include "memory/guest_memory.hpp"
#include "memory/numa.hpp"
#include "memory/policy.hpp"
#include "memory/prealloc.hpp"
#include "memory/report.hpp"
#include "monitor/memory_json.hpp"

using namespace ferry;

namespace {

constexpr uint64_t kMiB = 1ull << 20;

GuestMemory one_region(uint64_t size, Backend b = Backend::Anonymous) {
    auto mem = GuestMemory::create(size, b);
    REQUIRE(mem);
    return std::move(*mem);
}

RegionReport report_of(const GuestMemory& mem) {
    auto rep = memory_report(mem);
    REQUIRE(rep);
    REQUIRE(rep->regions.size() == 1);
    return rep->regions[0];
}

std::string thp_mode() { return thp_host_mode().value_or("never"); }

}  // namespace

TEST_CASE("--numa-node grammar", "[memory]") {
    auto p = parse_numa_node("0");
    REQUIRE(p);
    CHECK(p->mode == NumaMode::Bind);
    CHECK(p->nodes == std::vector<unsigned>{0});
    CHECK(to_string(*p) == "bind:0");

    auto il = parse_numa_node("0-2,5:interleave");
    REQUIRE(il);
    CHECK(il->mode == NumaMode::Interleave);
    CHECK(il->nodes == std::vector<unsigned>{0, 1, 2, 5});
    CHECK(to_string(*il) == "interleave:0,1,2,5");

    CHECK(parse_numa_node("1:preferred"));
    auto many = parse_numa_node("0,1:preferred");
    REQUIRE_FALSE(many);
    CHECK(many.error().message().find("exactly one") != std::string::npos);
    for (const char* bad : {"", ":bind", "x", "0:", "0:local", "0:default", "1-0", "0,", "-1", "99999", "0:bind:1"}) {
        INFO(bad);
        auto r = parse_numa_node(bad);
        REQUIRE_FALSE(r);
        CHECK(r.error().message().rfind("--numa-node", 0) == 0);
    }
    CHECK(parse_node_list("0-3,7") == std::vector<unsigned>{0, 1, 2, 3, 7});
}

TEST_CASE("zones are cut at the 32-bit hole", "[memory]") {
    auto z = zone_layout({2ull << 30, 2ull << 30});
    REQUIRE(z.size() == 3);
    CHECK(z[0].start.raw() == 0);
    CHECK(z[0].size == 2ull << 30);
    CHECK(z[0].zone == 0);
    CHECK(z[1].start.raw() == 2ull << 30);
    CHECK(z[1].size == 1ull << 30);
    CHECK(z[1].zone == 1);
    CHECK(z[2].start.raw() == 4ull << 30);
    CHECK(z[2].size == 1ull << 30);
    CHECK(z[2].zone == 1);
    auto single = zone_layout({64 * kMiB});
    REQUIRE(single.size() == 1);
    CHECK(single[0].size == 64 * kMiB);
}

TEST_CASE("memory options and [[memory-zone]] tables plan into the machine config", "[memory][config]") {
    auto file = parse_run_config(R"(
kernel = "/k.elf"
ksm = true
prealloc = true
memory-report = true
[[memory-zone]]
size = "64M"
host-nodes = [0]
policy = "interleave"
[[memory-zone]]
size = "32M"
[[memory-zone]]
size = "32M"
host-nodes = "0"
)", "zones.toml");
    REQUIRE(file);
    REQUIRE(file->memory_zones.size() == 3);
    auto plan = plan_run(*file);
    REQUIRE(plan);
    const MachineConfig& m = plan->machine;
    CHECK(m.ksm);
    CHECK(m.prealloc);
    CHECK(m.prealloc_progress);
    CHECK(m.memory_report_fd == 2);
    CHECK(m.mem_size == 128 * kMiB);
    REQUIRE(m.zones.size() == 3);
    CHECK(to_string(m.zones[0].numa) == "interleave:0");
    CHECK(m.zones[1].numa.mode == NumaMode::Default);
    CHECK(to_string(m.zones[2].numa) == "bind:0");

    auto msg = [](const std::string& toml) {
        auto a = parse_run_config("kernel = \"/k\"\n" + toml, "z.toml");
        if (!a) return a.error().message();
        auto p = plan_run(*a);
        return p ? std::string() : p.error().message();
    };
    CHECK(msg("mem = \"64M\"\n[[memory-zone]]\nsize = \"32M\"\n").find("does not match") != std::string::npos);
    CHECK(msg("[[memory-zone]]\nhost-nodes = 0\n").find("size is required") != std::string::npos);
    CHECK(msg("[[memory-zone]]\nsize = \"3M\"\n").find("multiple of 2M") != std::string::npos);
    CHECK(msg("[[memory-zone]]\nsize = \"4M\"\npolicy = \"bind\"\n").find("at least one host node") != std::string::npos);
    CHECK(msg("[[memory-zone]]\nsize = \"4M\"\npolicy = \"local\"\n").find("policy") != std::string::npos);
    CHECK(msg("[[memory-zone]]\nsize = \"4M\"\nnodes = 0\n").find("unknown key 'nodes'") != std::string::npos);
    CHECK(msg("memory-zone = 3\n").find("array of tables") != std::string::npos);

    RunArgs a;
    a.kernel = "/k";
    a.ksm = "maybe";
    CHECK_FALSE(plan_run(a));
    a.ksm = "on";
    a.numa_node = "0:preferred";
    auto ok = plan_run(a);
    REQUIRE(ok);
    CHECK(ok->machine.ksm);
    CHECK(to_string(ok->machine.numa) == "preferred:0");
    CHECK(ok->machine.memory_report_fd == -1);
}

TEST_CASE("smaps figures are summed over exactly the range", "[memory]") {
    const char* smaps =
        "00400000-00600000 r-xp 00000000 08:01 1 /bin/x\n"
        "Rss:                 100 kB\n"
        "7f0000000000-7f0000400000 rw-p 00000000 00:00 0 \n"
        "Size:               4096 kB\n"
        "Rss:                4096 kB\n"
        "AnonHugePages:      2048 kB\n"
        "KSM:                   8 kB\n"
        "VmFlags: rd wr mr mw me ac hg\n"
        "7f0000400000-7f0000800000 rw-s 00000000 00:01 7 /memfd:x (deleted)\n"
        "Rss:                   0 kB\n"
        "ShmemPmdMapped:        0 kB\n"
        "Shared_Hugetlb:     4096 kB\n"
        "Private_Hugetlb:       0 kB\n";
    auto a = sum_smaps(smaps, 0x7f0000000000, 0x7f0000400000);
    CHECK(a.vmas == 1);
    CHECK(a.exact);
    CHECK(a.rss == 4096 * 1024);
    CHECK(a.thp == 2048 * 1024);
    CHECK(a.ksm == 8 * 1024);
    CHECK(a.has_ksm_field);
    auto b = sum_smaps(smaps, 0x7f0000400000, 0x7f0000800000);
    CHECK(b.hugetlb == 4096 * 1024);
    CHECK(b.rss == 4096 * 1024);
    CHECK(b.thp == 0);
    auto half = sum_smaps(smaps, 0x7f0000000000, 0x7f0000200000);  // half of a VMA: apportioned
    CHECK_FALSE(half.exact);
    CHECK(half.rss == 2048 * 1024);
    auto none = sum_smaps(smaps, 0x1000, 0x2000);
    CHECK(none.vmas == 0);
}

TEST_CASE("THP on gives huge pages that the report counts; off gives none", "[memory]") {
    if (thp_mode() == "never") {
        WARN("THP is 'never' on this host: skipping");
        return;
    }
    for (bool on : {true, false}) {
        DYNAMIC_SECTION("thp " << (on ? "on" : "off")) {
            auto mem = one_region(32 * kMiB);
            const auto& r = mem.regions()[0];
            REQUIRE(apply_thp(r.map, on));
            REQUIRE(mem.record_policy(r.slot, RegionPolicy{on, false, {}, false}));
            std::memset(r.map.addr(), 0x5a, r.size());
            auto rr = report_of(mem);
            CHECK(rr.thp_requested == on);
            CHECK(rr.rss_bytes == 32 * kMiB);
            CHECK(rr.smaps_exact);
            if (on) CHECK(rr.thp_bytes >= 28 * kMiB);  // a block may miss under memory fragmentation
            else CHECK(rr.thp_bytes == 0);
        }
    }
}

TEST_CASE("MADV_COLLAPSE turns 4 KiB pages into huge pages", "[memory]") {
    if (thp_mode() == "never") {
        WARN("THP is 'never' on this host: skipping");
        return;
    }
    auto mem = one_region(8 * kMiB);
    const auto& r = mem.regions()[0];
    REQUIRE(apply_thp(r.map, false));
    std::memset(r.map.addr(), 0x33, r.size());
    CHECK(report_of(mem).thp_bytes == 0);
    REQUIRE(apply_thp(r.map, true));
    auto ok = collapse_huge_pages(r.map);
    INFO((ok ? std::string() : ok.error().message()));
    REQUIRE(ok);
    CHECK(report_of(mem).thp_bytes == 8 * kMiB);
    CHECK(r.map.addr()[12345] == 0x33);
    CHECK_FALSE(collapse_huge_pages(r.map, 8 * kMiB, 1));
}

TEST_CASE("prealloc populates every page and reports progress", "[memory]") {
    auto mem = one_region(160 * kMiB);
    const auto& r = mem.regions()[0];
    CHECK(report_of(mem).rss_bytes == 0);
    uint64_t seen = 0;
    unsigned calls = 0;
    REQUIRE(prealloc(r.map, [&](uint64_t bytes) {
        seen += bytes;
        calls++;
    }));
    CHECK(seen == 160 * kMiB);
    CHECK(calls == 3);  // 64 + 64 + 32 MiB
    CHECK(report_of(mem).rss_bytes == 160 * kMiB);
}

TEST_CASE("NUMA bind to node 0 is read back; absent nodes are refused", "[memory]") {
    auto mem = one_region(16 * kMiB);
    const auto& r = mem.regions()[0];
    auto bind0 = parse_numa_node("0:bind");
    REQUIRE(bind0);
    REQUIRE(check_numa_nodes(*bind0));
    auto ok = apply_numa(r.map, *bind0);
    INFO((ok ? std::string() : ok.error().message()));
    REQUIRE(ok);
    REQUIRE(mem.record_policy(r.slot, RegionPolicy{true, false, *bind0, false}));
    std::memset(r.map.addr(), 1, 8 * kMiB);  // half touched
    auto rr = report_of(mem);
    CHECK(rr.numa_requested == "bind:0");
    CHECK(rr.numa_policy == "bind:0");
    CHECK(rr.numa_sample_stride == 4096);
    CHECK(rr.numa_sampled == 4096);
    REQUIRE(rr.pages_per_node.size() == 1);
    CHECK(rr.pages_per_node.begin()->first == 0);
    CHECK(rr.pages_per_node.begin()->second == 2048);
    CHECK(rr.numa_unpopulated == 2048);

    auto host = host_memory_nodes();
    unsigned absent = host.back() + 1;
    auto p = parse_numa_node(std::to_string(absent));
    REQUIRE(p);
    auto refused = check_numa_nodes(*p);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().message().find("node " + std::to_string(absent) + " does not exist") != std::string::npos);
    // The kernel itself refuses too (EINVAL), with a clear message.
    auto kernel = apply_numa(r.map, *p);
    REQUIRE_FALSE(kernel);
    CHECK(kernel.error().message().find("refused NUMA policy bind:" + std::to_string(absent)) != std::string::npos);
}

TEST_CASE("KSM is for anonymous memory; the JSON report has the documented shape", "[memory]") {
    auto memfd = one_region(4 * kMiB, Backend::Memfd);
    auto refused = apply_ksm(memfd.regions()[0].map, true);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().item == ConfigItem::Ksm);
    CHECK(user_message(refused.error()) == "--ksm on: KSM merges only private anonymous memory (the anon memory backend), not memfd");
    CHECK(apply_ksm(memfd.regions()[0].map, false));

    auto mem = one_region(4 * kMiB);
    const auto& r = mem.regions()[0];
    auto ok = apply_ksm(r.map, true);
    if (!ksm_run_state()) {
        WARN("no KSM in this kernel: " << (ok ? "" : ok.error().message()));
        return;
    }
    REQUIRE(ok);
    REQUIRE(mem.record_policy(r.slot, RegionPolicy{true, true, {}, false}));
    auto rep = memory_report(mem);
    REQUIRE(rep);
    auto j = to_json(*rep);
    CHECK(j["regions"].size() == 1);
    CHECK(j["regions"][0]["ksm"]["requested"] == true);
    CHECK(j["regions"][0]["backend"] == "anon");
    CHECK(j["regions"][0]["size"] == 4 * kMiB);
    CHECK(j["regions"][0]["numa"]["policy"] == "default");
    CHECK(j["host"].contains("ksm-run"));
    CHECK(j["host"]["ksm-source"] == "smaps KSM (per region)");
    auto lines = format_report(*rep);
    REQUIRE(lines.size() >= 2);
    CHECK(lines[1].find("ksm=on ksm_merged_pages=") != std::string::npos);
    if (*ksm_run_state() != 1) {
        CHECK(rep->warnings.size() == 1);
        CHECK(rep->warnings[0].find("ksmd is not running") != std::string::npos);
    }
}
