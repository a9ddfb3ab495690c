// The switch-over never leaves two running copies of a guest, nor none reported as
// success (issue #12): QMP cannot resume or reset a guest a migration owns; the source
// completes only once the destination says the guest runs there; when that is unknown
// it keeps the guest paused and intact for the operator's `cont`, and when the
// destination proves it never started the guest, the source resumes it by itself.
// The listener drops junk and idle connections; cancel answers while the peer stalls.
// Faults are injected by a man in the middle (section_proxy.hpp).
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
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

// `mig` failed, query-migrate on the source says so with `why`, and the destination
// ended with status 1.
void check_failed(Process& mig, const std::string& q, Process& src, Process& dst, const std::string& why) {
    auto rc = mig.wait_exit(kLong);
    INFO("migrate: " << mig.out_text() << mig.err() << "\nsource: " << src.err() << "\ndest: " << dst.err());
    REQUIRE(rc);
    CHECK(*rc != 0);
    auto m = wait_migration_end(q);
    CHECK(m.at("status") == "failed");
    CHECK(m.value("error-desc", "").find(why) != std::string::npos);
    CHECK(dst.wait_exit(30s) == 1);
}

// The guest runs on in the source, which then ends cleanly.
void source_runs_on(Process& src) {
    ticks_go_on(src, src);
    src.signal(SIGTERM);
    CHECK(src.wait_exit(30s) == 0);
}

}  // namespace

TEST_CASE("cont, stop and system_reset are refused while a migration owns the guest", "[kvm][migration][switchover]") {
    auto q = sock("so-cont-src");
    auto src = source(q, "256M", 1, "mode=verify wss=64M rate=8M", {"--keep-source"});
    REQUIRE(src->wait_line(std::regex("^guest: tick=1 "), kLong));
    int port = 0;
    auto dst = destination("256M", 1, port);
    // A slow migration (16 MiB/s), so that the QMP commands land while it runs.
    auto mig = migrate(q, port, {"--max-bandwidth", "16M"});
    int refused = 0, tries = 0;
    std::string errors;
    while (!mig->wait_exit(10ms)) {
        for (const char* cmd : {"cont", "stop", "system_reset"}) {
            auto [rc, err] = qmp_try(q, cmd);
            ++tries;
            if (rc != 0) {
                ++refused;
                errors += err;
            }
        }
    }
    INFO("migrate: " << mig->out_text() << mig->err() << "\nsource: " << src->err() << "\ndest: " << dst->err());
    REQUIRE(mig->wait_exit(1s) == 0);
    CHECK(refused > 0);
    INFO(errors);
    CHECK(errors.find("A migration is in progress") != std::string::npos);
    // The guest ran on neither side twice: the source is postmigrate, the destination runs it.
    CHECK(status_of(q) == "postmigrate");
    CHECK(qmp_try(q, "cont").first != 0);
    ticks_go_on(*dst, *src);
    src->signal(SIGTERM);
    CHECK(src->wait_exit(30s) == 0);
    dst->signal(SIGTERM);
    CHECK(dst->wait_exit(30s) == 0);
}

TEST_CASE("Go lost on the way: the source keeps the guest paused and intact, and cont resumes it (postcopy: once the recovery is given up)",
          "[kvm][migration][switchover]") {
    for (std::string mode : {"precopy", "postcopy"}) {
        DYNAMIC_SECTION("mode=" << mode) {
            auto q = sock("so-go-src-" + mode);
            auto src = source(q, "128M", 1, "mode=verify wss=16M rate=1M");
            REQUIRE(src->wait_line(std::regex("^guest: tick=1 "), kLong));
            int port = 0;
            auto dst = destination("128M", 1, port);
            // Everything passes until Go, which never arrives: the connection is cut there.
            SectionProxy proxy(static_cast<uint16_t>(port), [](SectionProxy::Dir d, const Section& s) {
                if (d == SectionProxy::Dir::ToDestination && s.kind == SectionKind::Go) return SectionProxy::Action::Cut;
                return SectionProxy::Action::Forward;
            });
            auto mig = migrate(q, proxy.port(), {"--mode", mode});
            if (mode == "postcopy") {
                // The source cannot tell whether Go arrived: it pauses for a recovery
                // (ferry migrate: status 4). The operator, who sees that the destination
                // never ran the guest, gives the recovery up, which ferry allows only
                // while nothing showed the guest ran there.
                CHECK(mig->wait_exit(kLong) == 4);
                auto [xrc, xerr] = qmp_try(q, "migrate_cancel");
                INFO(xerr);
                CHECK(xrc == 0);
            }
            // The destination never got Go: it never ran the guest, and says so.
            check_failed(*mig, q, *src, *dst, "resume it here with QMP cont");
            CHECK(dst->out_text().find("guest: tick=") == std::string::npos);
            // The source holds the paused, intact guest; the operator resumes it.
            CHECK(status_of(q) == "paused");
            auto [crc, cerr] = qmp_try(q, "cont");
            INFO(cerr);
            CHECK(crc == 0);
            CHECK(status_of(q) == "running");
            source_runs_on(*src);
        }
    }
}

TEST_CASE("a destination that cannot start the guest after Go says so, and the source resumes it by itself",
          "[kvm][migration][switchover]") {
    auto q = sock("so-nostart-src");
    auto src = source(q, "128M", 1, "mode=verify wss=16M rate=1M");
    REQUIRE(src->wait_line(std::regex("^guest: tick=1 "), kLong));
    Process dst({"/usr/bin/env", "FERRY_TEST_FAIL_START=1", ferry_bin(), "run", "--mem", "128M", "--incoming", "tcp:127.0.0.1:0"});
    auto port = incoming_port(dst);
    REQUIRE(port);
    auto mig = migrate(q, std::stoi(*port));
    check_failed(*mig, q, *src, dst, "did not start the guest");
    CHECK(status_of(q) == "running");
    source_runs_on(*src);
}

TEST_CASE("the listener drops junk and idle connections, then takes the real source and no other",
          "[kvm][migration][switchover]") {
    auto q = sock("so-listen-src");
    auto src = source(q, "128M", 1, "mode=verify wss=16M rate=1M");
    REQUIRE(src->wait_line(std::regex("^guest: tick=1 "), kLong));
    int port = 0;
    auto dst = destination("128M", 1, port);
    int junk = tcp_connect(port);
    REQUIRE(junk >= 0);
    const char text[] = "GET / HTTP/1.0\r\n\r\nnot a migration stream at all......";
    CHECK(::write(junk, text, sizeof(text)) == static_cast<ssize_t>(sizeof(text)));
    int idle = tcp_connect(port);  // says nothing
    REQUIRE(idle >= 0);
    // The junk peer is told "refused" (and nothing more), then dropped.
    char buf[256];
    ssize_t n = ::read(junk, buf, sizeof(buf));
    CHECK(n > 0);
    CHECK(std::string(buf, static_cast<size_t>(std::max<ssize_t>(n, 0))).find("refused") != std::string::npos);
    ::close(junk);
    Process* dstp = nullptr;
    // The real source comes behind the idle one, which is dropped after 5 s.
    auto mig = migrate(q, port);
    auto rc = mig->wait_exit(kLong);
    INFO("migrate: " << mig->out_text() << mig->err() << "\nsource: " << src->err() << "\ndest: " << dst->err());
    REQUIRE(rc == 0);
    dstp = dst.get();
    dst->drain();
    CHECK(dst->err().find("dropped a connection") != std::string::npos);
    ticks_go_on(*dstp, *src);
    // The migration is in: nobody else gets in.
    int late = tcp_connect(port);
    CHECK(late < 0);
    if (late >= 0) ::close(late);
    ::close(idle);
    dst->signal(SIGTERM);
    CHECK(dst->wait_exit(30s) == 0);
}

TEST_CASE("migrate_cancel answers within 5 s while the destination stalls, and the guest runs on",
          "[kvm][migration][switchover]") {
    auto q = sock("so-stall-src");
    auto src = source(q, "256M", 1, "mode=verify wss=64M rate=8M");
    REQUIRE(src->wait_line(std::regex("^guest: tick=1 "), kLong));
    int port = 0;
    auto dst = destination("256M", 1, port);
    // The first RAM batch passes, then nothing more reaches the destination (nothing closes).
    SectionProxy proxy(static_cast<uint16_t>(port), [n = 0](SectionProxy::Dir d, const Section& s) mutable {
        if (d == SectionProxy::Dir::ToDestination && s.kind == SectionKind::RamBatch && ++n > 1) return SectionProxy::Action::Stall;
        return SectionProxy::Action::Forward;
    });
    auto mig = migrate(q, proxy.port());
    // Wait until it is stuck.
    for (int i = 0; i < 100 && proxy.seen(SectionProxy::Dir::ToDestination) < 3; ++i) std::this_thread::sleep_for(50ms);
    std::this_thread::sleep_for(1s);
    auto t0 = std::chrono::steady_clock::now();
    qmp_cmd(q, "migrate_cancel");
    auto m = wait_migration_end(q);
    auto took = std::chrono::steady_clock::now() - t0;
    INFO(m.dump());
    CHECK(m.at("status") == "cancelled");
    CHECK(took < 5s);
    CHECK(mig->wait_exit(30s) != 0);
    CHECK(status_of(q) == "running");
    proxy.cut();
    // The destination gave up on its own (the source cancelled, or the stall timeout).
    CHECK(dst->wait_exit(90s) == 1);
    source_runs_on(*src);
}
