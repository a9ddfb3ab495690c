// Postcopy recovery (issue #12): when the postcopy connection breaks, both sides pause
// (postcopy-paused) instead of losing the guest; the destination's guest runs on with
// the pages it has; QMP migrate-recover on the destination and `ferry migrate --resume`
// on the source finish the migration over a new connection, and the guest (verify
// mode: every page's content checked) goes on with nothing lost.
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "migration_helpers.hpp"
#include "process.hpp"
#include "section_proxy.hpp"

using namespace ferry;
using namespace ferry::test;
using namespace std::chrono_literals;

namespace {

struct Pair {
    std::string q, dq;
    std::unique_ptr<Process> src, dst;
    int port = 0;
};

// A running verify guest whose postcopy background stream is slow (2 MiB/s for 64 MiB
// of working set, most of it fetched by faults in a few seconds), so that the
// migration is still in postcopy when it is broken.
Pair start_pair(const std::string& name) {
    Pair p;
    p.q = sock("rec-src-" + name);
    p.dq = sock("rec-dst-" + name);
    p.src = source(p.q, "256M", 2, "mode=verify wss=64M rate=4M cpus=2");
    REQUIRE(p.src->wait_line(std::regex("^guest: tick=1 "), kLong));
    p.dst = destination("256M", 2, p.port, p.dq);
    qmp_json(p.q, "migrate-set-parameters", R"({"max-postcopy-bandwidth": 2097152})");
    return p;
}

// Recovers a paused pair through a fresh port and checks the guest goes on, whole.
void recover_and_check(Pair& p, Process& first_migrate) {
    // `ferry migrate` says the postcopy paused (status 4) and how to recover it.
    auto rc = first_migrate.wait_exit(kLong);
    INFO("migrate: " << first_migrate.out_text() << first_migrate.err() << "\nsource: " << p.src->err() << "\ndest: " << p.dst->err());
    CHECK(rc == 4);
    CHECK(first_migrate.err().find("--resume") != std::string::npos);
    auto sq = wait_status(p.q, "postcopy-paused");
    auto dq = wait_status(p.dq, "postcopy-paused");
    CHECK(sq.value("x-postcopy-pauses", 0) == 1);
    CHECK_FALSE(dq.value("error-desc", "").empty());
    // Neither side may be resumed, stopped or cancelled meanwhile.
    CHECK(qmp_error(p.q, "cont").find("migration") != std::string::npos);
    CHECK(qmp_error(p.q, "migrate_cancel").find("cannot be cancelled") != std::string::npos);
    CHECK(qmp_error(p.dq, "cont").find("migration") != std::string::npos);
    // The destination's guest runs on meanwhile (the pages it has are enough for some ticks, or it waits).
    CHECK(status_of(p.dq) == "running");
    CHECK(p.dst->out_text().find("CORRUPT") == std::string::npos);
    // A resume with nowhere to go fails and leaves it paused.
    int dead = free_port();
    auto bad = migrate(p.q, dead, {"--resume"});
    CHECK(bad->wait_exit(kLong) != 0);
    wait_status(p.q, "postcopy-paused");
    // Recover: the destination listens; a junk connection first is dropped; the source resumes.
    int port = free_port();
    qmp_json(p.dq, "migrate-recover", fmt::format(R"({{"uri": "tcp:127.0.0.1:{}"}})", port));
    int junk = tcp_connect(port);
    REQUIRE(junk >= 0);
    const char text[] = "not a resume section, certainly not the token";
    CHECK(::write(junk, text, sizeof(text)) == static_cast<ssize_t>(sizeof(text)));
    auto resume = migrate(p.q, port, {"--resume"});
    rc = resume->wait_exit(kLong);
    ::close(junk);
    INFO("resume: " << resume->out_text() << resume->err() << "\nsource: " << p.src->err() << "\ndest: " << p.dst->err());
    CHECK(rc == 0);
    CHECK(resume->out_text().find("migration completed") != std::string::npos);
    auto done = wait_status(p.dq, "completed");
    CHECK(done.value("x-postcopy-pauses", 0) == 1);
    CHECK(p.src->wait_exit(30s) == 0);
    ticks_go_on(*p.dst, *p.src);
    p.dst->signal(SIGTERM);
    CHECK(p.dst->wait_exit(30s) == 0);
}

}  // namespace

TEST_CASE("postcopy recovery: a broken postcopy pauses both sides; recover and resume finish it, nothing lost",
          "[kvm][migration][postcopy][recovery]") {
    SECTION("the connection is cut in the middle of postcopy") {
        auto p = start_pair("cut");
        // Cut both ways at the 20th pushed RAM batch after Go.
        std::atomic<bool> after_go{false};
        std::atomic<int> pushed{0};
        SectionProxy proxy(static_cast<uint16_t>(p.port), [&](SectionProxy::Dir d, const Section& s) {
            if (d != SectionProxy::Dir::ToDestination) return SectionProxy::Action::Forward;
            if (s.kind == SectionKind::Go) after_go = true;
            if (after_go && s.kind == SectionKind::RamBatch && ++pushed == 20) return SectionProxy::Action::Cut;
            return SectionProxy::Action::Forward;
        });
        auto mig = migrate(p.q, proxy.port(), {"--mode", "postcopy"});
        recover_and_check(p, *mig);
    }
    SECTION("migrate-pause on the destination, with postcopy-preempt's second connection") {
        auto p = start_pair("pause");
        auto mig = migrate(p.q, p.port, {"--mode", "postcopy", "--postcopy-preempt"});
        wait_status(p.dq, "postcopy-active");
        qmp_json(p.dq, "migrate-pause");
        recover_and_check(p, *mig);
    }
}

TEST_CASE("postcopy recovery commands are refused where nothing is paused", "[kvm][migration][postcopy][recovery][errors]") {
    auto q = sock("rec-err-src");
    auto src = source(q, "64M", 1, "mode=verify wss=8M rate=1M");
    REQUIRE(src->wait_line(std::regex("^guest: tick=1 "), kLong));
    CHECK(qmp_error(q, "migrate", R"({"uri": "tcp:127.0.0.1:1", "resume": true})").find("no outgoing migration") !=
          std::string::npos);
    CHECK(qmp_error(q, "migrate-recover", R"({"uri": "tcp:127.0.0.1:0"})").find("no incoming migration") != std::string::npos);
    CHECK(qmp_error(q, "migrate-pause").find("no postcopy migration") != std::string::npos);
    // A precopy migration cannot be paused, nor resumed.
    int port = 0;
    auto dst = destination("64M", 1, port);
    qmp_json(q, "migrate-set-parameters", R"({"max-bandwidth": 4194304})");
    auto mig = migrate(q, port);
    wait_ram_sent(q, 1 << 20);
    CHECK(qmp_error(q, "migrate-pause").find("only a postcopy migration") != std::string::npos);
    CHECK(qmp_error(q, "migrate", R"({"uri": "tcp:127.0.0.1:1", "resume": true})").find("no paused postcopy") !=
          std::string::npos);
    CHECK(mig->wait_exit(kLong) == 0);
    ticks_go_on(*dst, *src);
    dst->signal(SIGTERM);
    CHECK(dst->wait_exit(30s) == 0);
}
