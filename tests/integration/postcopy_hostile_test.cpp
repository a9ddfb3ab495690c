// A hostile stream during postcopy: a man in the middle between a real source and a
// real (paused) destination passes the migration through section by section and, after
// Go, tampers with the first pushed RAM batch. The destination must refuse it with a
// clear error, stop, and never write outside guest RAM; the source must stay paused
// (the guest's only complete copy) and report the failure. A section damaged on the
// way (its checksum wrong) is the connection's fault, not the source's: both sides
// pause, and a recovery over a clean connection finishes the migration.
#include <signal.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <cstring>
#include <regex>
#include <thread>

#include "migration/channel.hpp"
#include "migration/stream.hpp"
#include "migration_helpers.hpp"
#include "process.hpp"

using namespace ferry;
using namespace ferry::test;
using namespace std::chrono_literals;

namespace {

enum class Tampering { OutsideRam, SentTwice, Unrequested, BadChecksum };

class Tamperer {
public:
    Tamperer(Tampering how, int dst_port) : how_(how), dst_port_(dst_port) {
        auto l = Listener::listen(TcpAddress{"127.0.0.1", 0});
        REQUIRE(l);
        listener_ = std::make_unique<Listener>(std::move(*l));
        thread_ = std::thread([this] { run(); });
    }
    ~Tamperer() {
        listener_->cancel();
        if (src_) src_->cancel();
        if (dst_) dst_->cancel();
        if (thread_.joinable()) thread_.join();
        if (back_.joinable()) back_.join();
    }
    uint16_t port() const { return listener_->port(); }
    bool tampered() const { return tampered_; }

private:
    void run() {
        auto s = listener_->accept();
        if (!s) return;
        src_ = std::make_unique<Channel>(std::move(*s));
        auto d = Channel::connect(TcpAddress{"127.0.0.1", static_cast<uint16_t>(dst_port_)}, 10s);
        if (!d) return;
        dst_ = std::make_unique<Channel>(std::move(*d));
        back_ = std::thread([this] {  // destination -> source, as it is
            for (;;) {
                auto sec = recv_section(*dst_);
                if (!sec || !send_section(*src_, sec->kind, sec->instance, sec->payload)) return;
            }
        });
        bool after_go = false;
        for (;;) {
            auto sec = recv_section(*src_);
            if (!sec) return;
            if (sec->kind == SectionKind::Go) after_go = true;
            if (after_go && !tampered_ && sec->kind == SectionKind::RamBatch && sec->instance == kRamPushed) {
                tampered_ = true;
                if (!tamper(*sec)) return;
                continue;
            }
            if (!send_section(*dst_, sec->kind, sec->instance, sec->payload)) return;
        }
    }

    bool tamper(Section& sec) {
        switch (how_) {
            case Tampering::OutsideRam: {
                uint64_t e = 0;
                std::memcpy(&e, sec.payload.data() + 4, 8);
                e = (1ull << 44) | (e & 4095);  // far above guest RAM, same flags
                std::memcpy(sec.payload.data() + 4, &e, 8);
                return bool(send_section(*dst_, sec.kind, sec.instance, sec.payload));
            }
            case Tampering::SentTwice:
                return send_section(*dst_, sec.kind, sec.instance, sec.payload) &&
                       send_section(*dst_, sec.kind, sec.instance, sec.payload);
            case Tampering::Unrequested: return bool(send_section(*dst_, sec.kind, kRamAnswer, sec.payload));
            case Tampering::BadChecksum: {
                SectionFrame f{static_cast<uint16_t>(sec.kind), static_cast<uint16_t>(kStreamVersion), sec.instance, sec.payload.size()};
                std::vector<uint8_t> raw(sizeof(f) + sec.payload.size() + 8, 0);
                std::memcpy(raw.data(), &f, sizeof(f));
                std::memcpy(raw.data() + sizeof(f), sec.payload.data(), sec.payload.size());
                raw[raw.size() - 1] = 0x5a;  // not the payload's XXH3
                return bool(dst_->send_all(raw));
            }
        }
        return false;
    }

    Tampering how_;
    int dst_port_;
    std::unique_ptr<Listener> listener_;
    std::unique_ptr<Channel> src_, dst_;
    std::atomic<bool> tampered_{false};
    std::thread thread_, back_;
};

}  // namespace

TEST_CASE("postcopy: a hostile stream is refused with a clear error; the source keeps the guest, paused",
          "[kvm][migration][postcopy][errors]") {
    struct Case {
        const char* name;
        Tampering how;
        const char* reason;
    };
    for (const auto& c : {Case{"page outside RAM", Tampering::OutsideRam, "outside guest RAM"},
                          Case{"page sent twice", Tampering::SentTwice, "was sent twice"},
                          Case{"answer never requested", Tampering::Unrequested, "never requested"}}) {
        DYNAMIC_SECTION(c.name) {
            auto q = sock(std::string("pc-hostile-") + std::to_string(static_cast<int>(c.how)));
            auto src = source(q, "64M", 1, "mode=dirty wss=8M rate=4M");
            REQUIRE(src->wait_line(std::regex("^guest: tick=1 "), kLong));
            int port = 0;
            auto dst = destination("64M", 1, port, "", {"--paused"});  // no faults: every page is pushed
            Tamperer mitm(c.how, port);
            auto mig = migrate(q, mitm.port(), {"--mode", "postcopy"});
            auto rc = mig->wait_exit(kLong);
            auto drc = dst->wait_exit(60s);
            INFO("migrate: " << mig->out_text() << mig->err() << "\ndest: " << dst->err() << "\nsource: " << src->err());
            CHECK(mitm.tampered());
            REQUIRE(rc);
            CHECK(*rc != 0);
            REQUIRE(drc);
            CHECK(*drc == 1);
            CHECK(dst->err().find(c.reason) != std::string::npos);
            CHECK(dst->err().find("postcopy phase") != std::string::npos);
            // The source never resumes a guest the destination may have run.
            CHECK(qmp_cmd(q, "query-status").find("\"postmigrate\"") != std::string::npos);
            CHECK(qmp_cmd(q, "query-migrate").find("\"failed\"") != std::string::npos);
            src->signal(SIGTERM);
            CHECK(src->wait_exit(30s) == 0);
        }
    }
}

TEST_CASE("postcopy: a section damaged on the way pauses both sides; a recovery finishes the migration",
          "[kvm][migration][postcopy][errors][recovery]") {
    auto q = sock("pc-hostile-sum");
    auto dq = sock("pc-hostile-sum-dst");
    auto src = source(q, "64M", 1, "mode=dirty wss=8M rate=4M", {"--keep-source"});
    REQUIRE(src->wait_line(std::regex("^guest: tick=1 "), kLong));
    int port = 0;
    auto dst = destination("64M", 1, port, dq, {"--paused"});
    Tamperer mitm(Tampering::BadChecksum, port);
    auto mig = migrate(q, mitm.port(), {"--mode", "postcopy"});
    auto rc = mig->wait_exit(kLong);
    INFO("migrate: " << mig->out_text() << mig->err() << "\ndest: " << dst->err() << "\nsource: " << src->err());
    CHECK(mitm.tampered());
    CHECK(rc == 4);  // paused
    auto dm = wait_status(dq, "postcopy-paused", 10s);
    CHECK(dm.value("error-desc", "").find("checksum mismatch") != std::string::npos);
    int rport = free_port();
    qmp_json(dq, "migrate-recover", "{\"uri\": \"tcp:127.0.0.1:" + std::to_string(rport) + "\"}");
    auto resume = migrate(q, rport, {"--resume"});
    CHECK(resume->wait_exit(kLong) == 0);
    wait_status(dq, "completed", 10s);
    // Every page came: the paused guest's RAM is the (kept, paused) source's.
    auto a = qmp_json(q, "ferry-query-ram-checksum"), b = qmp_json(dq, "ferry-query-ram-checksum");
    CHECK(a.at("xxh3") == b.at("xxh3"));
    src->signal(SIGTERM);
    CHECK(src->wait_exit(30s) == 0);
    dst->signal(SIGTERM);
    CHECK(dst->wait_exit(30s) == 0);
}
