// Postcopy and hybrid live migration between two ferry processes over loopback TCP:
// the destination runs the guest at once and fetches missing pages through
// userfaultfd while the source streams the rest (migration/source_postcopy.cpp,
// migration/postcopy_incoming.cpp).
#include <signal.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <fstream>
#include <iterator>
#include <regex>
#include <thread>

#include "host_setting.hpp"
#include "migration_helpers.hpp"
#include "process.hpp"
#include "tests/common/elf_builder.hpp"

using namespace ferry::test;
using namespace std::chrono_literals;

namespace {

// The destination completes once its last page is in (a moment after the source).
nlohmann::json wait_completed(const std::string& dst_qmp) { return wait_status(dst_qmp, "completed", 10s); }

// The destination's fault figures are present and consistent.
void check_latency(const std::string& dst_qmp) {
    auto q = wait_completed(dst_qmp);
    auto lat = qmp_json(dst_qmp, "ferry-query-migrate-latency");
    INFO(lat.dump());
    CHECK(lat.at("count").get<uint64_t>() > 0);
    CHECK(lat.at("p50-us").get<uint64_t>() <= lat.at("p99-us").get<uint64_t>());
    CHECK(lat.at("p99-us").get<uint64_t>() <= lat.at("max-us").get<uint64_t>());
    CHECK(lat.at("requests").get<uint64_t>() <= lat.at("faults").get<uint64_t>());
    CHECK(lat.at("requests").get<uint64_t>() > 0);
    CHECK(lat.at("series").size() > 0);
    INFO(q.dump());
    CHECK(q.contains("postcopy-blocktime"));
    CHECK(q.at("postcopy-vcpu-blocktime").is_array());
    CHECK(q.at("ram").at("postcopy-requests").get<uint64_t>() == lat.at("requests").get<uint64_t>());
}

// Huge pages reserved for a hugetlbfs destination of `mem_mib` MiB (and put back after).
void reserve_huge_pages(HostSetting& nr, uint64_t mem_mib) {
    REQUIRE(nr.exists());
    uint64_t want = mem_mib / 2 + 8;
    REQUIRE(nr.set(std::to_string(want)));
    INFO("the host reserved " << nr.now().value_or("?") << " of " << want << " 2 MiB pages");
    REQUIRE(std::stoull(nr.now().value_or("0")) >= want);
}

// Migrates to a paused destination with the given RAM backing (the source keeps its
// guest paused afterwards): every page must be there, equal to the source's, before
// the guest runs on the destination; then it runs, and its memory checks out.
void paused_migration(const std::string& name, const std::string& backend, const std::string& mode, const std::string& guest) {
    auto q = sock("pc-sum-src-" + name);
    auto dq = sock("pc-sum-dst-" + name);
    auto src = source(q, "128M", 1, guest, {"--keep-source"});
    REQUIRE(src->wait_line(std::regex("^guest: tick=2 "), kLong));
    if (mode == "hybrid") qmp_cmd(q, "migrate-set-parameters", R"({"downtime-limit": 0, "x-max-rounds": 2})");
    int port = 0;
    auto dst = destination("128M", 1, port, dq, {"--paused", "--memory-backend", backend});
    auto mig = migrate(q, port, {"--mode", mode});
    auto rc = mig->wait_exit(kLong);
    INFO("migrate: " << mig->out_text() << mig->err() << "\nsource: " << src->err() << "\ndest: " << dst->err());
    REQUIRE(rc == 0);
    auto sq = qmp_json(q, "query-status");
    CHECK(sq.at("status") == "postmigrate");
    auto done = wait_completed(dq);
    if (mode == "hybrid") CHECK(done.at("ram").at("postcopy-requests").get<uint64_t>() == 0);  // paused: nothing faults
    // Pages arrived 4 KiB at a time; MADV_COLLAPSE put huge pages back: at least 90% of
    // the 32 MiB working set (where the host gives THP at all).
    std::ifstream thp_mode("/sys/kernel/mm/transparent_hugepage/enabled");
    std::string thp((std::istreambuf_iterator<char>(thp_mode)), std::istreambuf_iterator<char>());
    if (backend == "anon" && thp.find("[never]") == std::string::npos) {
        auto mem = qmp_json(dq, "ferry-query-memory");
        INFO(mem.dump());
        REQUIRE(mem.contains("postcopy"));
        CHECK(mem.at("postcopy").at("thp-after-collapse-bytes").get<uint64_t>() >= 32ull * 1024 * 1024 * 9 / 10);
        CHECK(mem.at("postcopy").at("thp-before-collapse-bytes").get<uint64_t>() <= mem.at("postcopy").at("thp-after-collapse-bytes").get<uint64_t>());
    } else if (backend == "anon") {
        WARN("transparent huge pages are off on this host ([never]): THP coverage not checked");
    }
    auto a = qmp_json(q, "ferry-query-ram-checksum");
    auto b = qmp_json(dq, "ferry-query-ram-checksum");
    CHECK(b.at("status") == "paused");
    CHECK(a.at("regions") == b.at("regions"));
    CHECK(a.at("xxh3") == b.at("xxh3"));
    int before = last_tick(*src);
    qmp_cmd(dq, "cont");
    auto next = dst->wait_line(std::regex("^guest: tick=\\d+ "), 30s);
    REQUIRE(next);
    CHECK(std::stoi(next->substr(std::string("guest: tick=").size())) > before);
    CHECK(next->find("corrupt=0") != std::string::npos);
    dst->signal(SIGTERM);
    CHECK(dst->wait_exit(30s) == 0);
    src->signal(SIGTERM);
    CHECK(src->wait_exit(30s) == 0);
}

// A running guest (`cpus` vCPUs, the given workload) migrated by postcopy to a fresh
// destination: it goes on there, its faults were served, and it ends cleanly.
void running_postcopy(const std::string& name, int cpus, const std::string& workload, std::vector<std::string> mig_extra,
                      std::vector<std::string> dst_extra = {}) {
    auto q = sock("pc-src-" + name);
    auto dq = sock("pc-dst-" + name);
    auto src = source(q, "128M", cpus, workload);
    REQUIRE(src->wait_line(std::regex("^guest: tick=2 "), kLong));
    Process* dst = nullptr;
    std::unique_ptr<Process> holder;
    mig_extra.insert(mig_extra.begin(), {"--mode", "postcopy"});
    migrate_and_check(*src, q, "128M", cpus, dst, holder, dq, std::move(mig_extra), std::move(dst_extra));
    check_latency(dq);
    dst->signal(SIGTERM);
    CHECK(dst->wait_exit(30s) == 0);
}

}  // namespace

TEST_CASE("postcopy: the guest runs on the destination at once and goes on", "[kvm][migration][postcopy]") {
    for (int cpus : {1, 2}) {
        for (std::string mode : {"verify", "dirty"}) {
            DYNAMIC_SECTION("mode=" << mode << " cpus=" << cpus) {
                running_postcopy(mode + std::to_string(cpus), cpus,
                                 "mode=" + mode + " wss=32M rate=8M cpus=" + std::to_string(cpus), {});
            }
        }
    }
}

TEST_CASE("postcopy: a paused destination receives every page; its RAM equals the source's", "[kvm][migration][postcopy]") {
    SECTION("anonymous RAM") { paused_migration("anon", "anon", "postcopy", "mode=dirty wss=32M rate=8M"); }
    SECTION("memfd RAM (shmem userfaultfd)") { paused_migration("memfd", "memfd", "postcopy", "mode=dirty wss=32M rate=8M"); }
    SECTION("hugetlbfs RAM: whole 2 MiB pages") {
        HostSetting nr("/proc/sys/vm/nr_hugepages");
        reserve_huge_pages(nr, 128);
        paused_migration("huge", "hugetlbfs", "postcopy", "mode=dirty wss=32M rate=8M");
    }
    SECTION("hugetlbfs RAM after precopy rounds (2 MiB pages partly dirtied come again)") {
        HostSetting nr("/proc/sys/vm/nr_hugepages");
        reserve_huge_pages(nr, 128);
        paused_migration("huge-hybrid", "hugetlbfs", "hybrid", "mode=dirty wss=32M rate=max");
    }
}

TEST_CASE("postcopy into memfd and hugetlbfs RAM: the guest runs at once and faults are served", "[kvm][migration][postcopy]") {
    for (std::string backend : {"memfd", "hugetlbfs"}) {
        DYNAMIC_SECTION("backend=" << backend) {
            HostSetting nr("/proc/sys/vm/nr_hugepages");
            if (backend == "hugetlbfs") reserve_huge_pages(nr, 128);
            running_postcopy("be-" + backend, 2, "mode=dirty wss=32M rate=8M cpus=2", {}, {"--memory-backend", backend});
        }
    }
}

TEST_CASE("postcopy-preempt: answers travel on a second connection", "[kvm][migration][postcopy]") {
    SECTION("a running guest, 2 vCPUs") {
        running_postcopy("pre", 2, "mode=dirty wss=32M rate=8M cpus=2", {"--postcopy-preempt"});
    }
    SECTION("hugetlbfs RAM: whole 2 MiB pages on both connections") {
        HostSetting nr("/proc/sys/vm/nr_hugepages");
        reserve_huge_pages(nr, 128);
        running_postcopy("pre-huge", 1, "mode=dirty wss=32M rate=8M", {"--postcopy-preempt"}, {"--memory-backend", "hugetlbfs"});
    }
}

TEST_CASE("hybrid: a migration precopy alone cannot finish completes by switching to postcopy", "[kvm][migration][postcopy]") {
    auto q = sock("hy-src");
    auto dq = sock("hy-dst");
    auto src = source(q, "128M", 1, "mode=dirty wss=32M rate=max");
    REQUIRE(src->wait_line(std::regex("^guest: tick=2 "), kLong));
    // With these, precopy fails ("not converging": see the migration tests).
    qmp_cmd(q, "migrate-set-parameters", R"({"downtime-limit": 0, "x-max-rounds": 4})");
    Process* dst = nullptr;
    std::unique_ptr<Process> holder;
    migrate_and_check(*src, q, "128M", 1, dst, holder, dq, {"--mode", "hybrid", "--max-bandwidth", "64M"});
    auto lat = qmp_json(dq, "ferry-query-migrate-latency");  // there was a postcopy phase
    CHECK(lat.at("faults").get<uint64_t>() >= lat.at("requests").get<uint64_t>());
    dst->signal(SIGTERM);
    CHECK(dst->wait_exit(30s) == 0);
}

TEST_CASE("postcopy is refused before any page when the destination cannot serve it; the source goes on",
          "[kvm][migration][postcopy][errors]") {
    struct Case {
        std::string name;
        std::vector<std::string> dst_extra;
        std::string env;
        std::string reason;
    };
    // UFFD_FEATURE_MISSING_HUGETLBFS (1 << 4) hidden: a kernel whose userfaultfd cannot
    // serve hugetlbfs.
    for (const auto& c : {Case{"no-userfaultfd", {}, "FERRY_TEST_DENY_USERFAULTFD=1", "userfaultfd is not available"},
                          Case{"prealloc", {"--prealloc"}, "", "preallocated its RAM"},
                          Case{"hugetlbfs-without-uffd-support", {"--memory-backend", "hugetlbfs"}, "FERRY_TEST_UFFD_HIDE_FEATURES=10",
                               "cannot serve hugetlbfs-backed RAM"}}) {
        DYNAMIC_SECTION(c.name) {
            HostSetting nr("/proc/sys/vm/nr_hugepages");
            if (c.name.starts_with("hugetlbfs")) reserve_huge_pages(nr, 64);
            auto q = sock("pc-refuse-" + c.name);
            auto src = source(q, "64M", 1, "mode=verify wss=8M rate=1M");
            REQUIRE(src->wait_line(std::regex("^guest: tick=1 "), kLong));
            std::vector<std::string> argv;
            if (!c.env.empty()) argv = {"/usr/bin/env", c.env};
            argv.insert(argv.end(), {ferry_bin(), "run", "--mem", "64M", "--incoming", "tcp:127.0.0.1:0"});
            argv.insert(argv.end(), c.dst_extra.begin(), c.dst_extra.end());
            Process dst(argv);
            auto port = incoming_port(dst);
            INFO(dst.err());
            REQUIRE(port);
            auto mig = migrate(q, std::stoi(*port), {"--mode", "postcopy"});
            auto rc = mig->wait_exit(kLong);
            INFO("migrate: " << mig->out_text() << mig->err() << "\ndest: " << dst.err());
            REQUIRE(rc);
            CHECK(*rc != 0);
            CHECK(mig->err().find("refusing postcopy") != std::string::npos);
            CHECK(mig->err().find(c.reason) != std::string::npos);
            CHECK(dst.wait_exit(30s) == 1);
            // The source runs on.
            CHECK(qmp_cmd(q, "query-status").find("\"running\"") != std::string::npos);
            int t = last_tick(*src);
            REQUIRE(src->wait_line(std::regex("^guest: tick=" + std::to_string(t + 1) + " "), 30s));
            src->signal(SIGTERM);
            CHECK(src->wait_exit(30s) == 0);
        }
    }
}

TEST_CASE("migrate-start-postcopy needs postcopy-ram and a migration", "[kvm][migration][postcopy][errors]") {
    auto q = sock("pc-qmp");
    auto src = source(q, "64M", 1, "mode=verify wss=8M rate=0");
    REQUIRE(src->wait_line(std::regex("^guest: tick=1 "), kLong));
    CHECK(qmp_error(q, "migrate-start-postcopy").find("after migration has been started") != std::string::npos);
    auto has = [&](bool state) {
        for (const auto& c : qmp_json(q, "query-migrate-capabilities"))
            if (c.at("capability") == "postcopy-ram") return c.at("state").get<bool>() == state;
        return false;
    };
    CHECK(has(false));
    qmp_cmd(q, "migrate-set-capabilities", R"({"capabilities": [{"capability": "postcopy-ram", "state": true}]})");
    CHECK(has(true));
    CHECK(qmp_error(q, "ferry-query-migrate-latency").find("no postcopy") != std::string::npos);
    src->signal(SIGTERM);
    CHECK(src->wait_exit(30s) == 0);
}
