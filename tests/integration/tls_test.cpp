// Migration over TLS 1.3 (migration/tls.hpp): with X.509 certificates (QEMU's file
// layout) and with a pre-shared key, precopy and postcopy with its second connection;
// and a destination started with TLS refuses, before reading any page, a plain
// source, a source whose certificate its CA did not sign, and one tls-authz does not
// name. The certificates are made here with the openssl command.
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <fmt/format.h>

#include "migration_helpers.hpp"
#include "process.hpp"

using namespace ferry::test;
using namespace std::chrono_literals;

namespace {

void sh(const std::string& cmd) {
    INFO(cmd);
    REQUIRE(std::system((cmd + " >/dev/null 2>&1").c_str()) == 0);
}

// A CA and its signed certificate `name` (CN) with loopback names, as `prefix`-cert.pem
// and `prefix`-key.pem in `dir`.
void issue(const std::string& dir, const std::string& ca, const std::string& prefix, const std::string& cn) {
    sh(fmt::format("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj '/CN={2}' -keyout {0}/{1}-key.pem "
                   "-out {0}/{1}.csr",
                   dir, prefix, cn));
    std::ofstream(dir + "/ext.cnf") << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
    sh(fmt::format("openssl x509 -req -in {0}/{1}.csr -CA {2}-cert.pem -CAkey {2}-key.pem -CAcreateserial -days 2 "
                   "-extfile {0}/ext.cnf -out {0}/{1}-cert.pem",
                   dir, prefix, ca));
}

void make_ca(const std::string& path_prefix, const std::string& cn) {
    sh(fmt::format("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj '/CN={1}' "
                   "-keyout {0}-key.pem -out {0}-cert.pem",
                   path_prefix, cn));
}

struct Pki {
    std::string good, rogue;  // QEMU-layout directories: one CA; a client from another CA
    Pki() {
        const std::string base = "/tmp/ferry-tls-" + std::to_string(::getpid());
        good = base + "/good";
        rogue = base + "/rogue";
        std::filesystem::create_directories(good);
        std::filesystem::create_directories(rogue);
        make_ca(good + "/ca", "ferry test CA");
        issue(good, good + "/ca", "server", "destination");
        issue(good, good + "/ca", "client", "source");
        // The rogue source trusts the real CA (it may check the destination) but its
        // own certificate comes from a CA the destination does not know.
        make_ca(rogue + "/other-ca", "another CA");
        issue(rogue, rogue + "/other-ca", "client", "source");
        std::filesystem::copy_file(good + "/ca-cert.pem", rogue + "/ca-cert.pem");
    }
    ~Pki() { std::filesystem::remove_all(std::filesystem::path(good).parent_path()); }
};

std::string psk_file(const std::string& identity, const std::string& hex) {
    std::string path = "/tmp/ferry-tls-" + std::to_string(::getpid()) + "-" + identity + ".psk";
    std::ofstream(path) << identity << ":" << hex << "\n";
    return path;
}

// A source that cannot get in: `ferry migrate` fails, the source's guest runs on, and
// the destination, which logged `why`, still waits for a migration.
void refused(const std::vector<std::string>& src_extra, const std::vector<std::string>& mig_extra,
             const std::vector<std::string>& dst_extra, const std::string& why) {
    const std::string qmp = sock("tls-refused");
    auto src = source(qmp, "64M", 1, "mode=idle", src_extra);
    REQUIRE(src->wait_line(std::regex("^guest: tick=1 "), 60s));
    int port = 0;
    auto dst = destination("64M", 1, port, "", dst_extra);
    auto mig = migrate(qmp, port, mig_extra);
    auto rc = mig->wait_exit(kLong);
    INFO("migrate: " << mig->out_text() << mig->err() << "\nsource: " << src->err() << "\ndest: " << dst->err());
    CHECK(rc == 1);
    CHECK(dst->wait_err(std::regex(why), 30s));
    // Still waiting: the port takes the next connection.
    int fd = tcp_connect(port);
    CHECK(fd >= 0);
    if (fd >= 0) ::close(fd);
    // The source's guest goes on.
    int before = last_tick(*src);
    CHECK(src->wait_line(std::regex("^guest: tick=" + std::to_string(before + 1) + " "), 30s));
    src->signal(SIGTERM);
    dst->signal(SIGTERM);
    CHECK(src->wait_exit(30s) == 0);
    CHECK(dst->wait_exit(30s) == 0);
}

}  // namespace

TEST_CASE("a guest migrates over TLS with X.509 certificates (precopy, postcopy with preempt)", "[kvm][migration][tls]") {
    Pki pki;
    const std::string mode = GENERATE(as<std::string>{}, "precopy", "postcopy");
    const std::string qmp = sock("tls-src");
    auto src = source(qmp, "64M", 2, "mode=dirty wss=8M", {"--tls-creds", pki.good});
    REQUIRE(src->wait_line(std::regex("^guest: tick=1 "), 60s));
    auto params = qmp_json(qmp, "query-migrate-parameters");
    CHECK(params.value("tls-creds", "") == "tls0");
    std::vector<std::string> mig{"--tls", "--mode", mode};
    if (mode == "postcopy") mig.push_back("--postcopy-preempt");
    Process* dst = nullptr;
    std::unique_ptr<Process> holder;
    migrate_and_check(*src, qmp, "64M", 2, dst, holder, "", mig, {"--tls-creds", pki.good});
    dst->signal(SIGTERM);
    CHECK(dst->wait_exit(30s) == 0);
}

TEST_CASE("a guest migrates over TLS with a pre-shared key", "[kvm][migration][tls]") {
    auto key = psk_file("ferry", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff");
    const std::string qmp = sock("psk-src");
    auto src = source(qmp, "64M", 1, "mode=dirty wss=4M", {"--tls-psk", key});
    REQUIRE(src->wait_line(std::regex("^guest: tick=1 "), 60s));
    Process* dst = nullptr;
    std::unique_ptr<Process> holder;
    migrate_and_check(*src, qmp, "64M", 1, dst, holder, "", {"--tls"}, {"--tls-psk", key, "--tls-authz", "ferry"});
    dst->signal(SIGTERM);
    CHECK(dst->wait_exit(30s) == 0);
    ::unlink(key.c_str());
}

TEST_CASE("a destination with TLS refuses a plain source, a wrong certificate and a client tls-authz does not name",
          "[kvm][migration][tls]") {
    Pki pki;
    SECTION("plain TCP") { refused({}, {}, {"--tls-creds", pki.good}, "dropped a connection: TLS handshake failed"); }
    SECTION("a client certificate from another CA") {
        refused({"--tls-creds", pki.rogue}, {"--tls"}, {"--tls-creds", pki.good}, "dropped a connection: TLS handshake failed");
    }
    SECTION("tls-authz names another client") {
        refused({"--tls-creds", pki.good}, {"--tls"}, {"--tls-creds", pki.good, "--tls-authz", "CN=someone-else"},
                "refused the client certificate 'CN=source'");
    }
    SECTION("another pre-shared key") {
        auto mine = psk_file("ferry", "00112233445566778899aabbccddeeff");
        auto theirs = psk_file("ferry2", "ffeeddccbbaa99887766554433221100");
        std::string theirs_same_id = theirs + ".same";
        std::ofstream(theirs_same_id) << "ferry:ffeeddccbbaa99887766554433221100\n";
        refused({"--tls-psk", theirs_same_id}, {"--tls"}, {"--tls-psk", mine}, "dropped a connection: TLS handshake failed");
        ::unlink(mine.c_str());
        ::unlink(theirs.c_str());
        ::unlink(theirs_same_id.c_str());
    }
}

TEST_CASE("TLS options: clear errors for missing files and contradictions", "[kvm][tls]") {
    auto run = [](std::vector<std::string> extra) {
        std::vector<std::string> argv{ferry_bin(), "run", "--mem", "64M", "--incoming", "tcp:127.0.0.1:0"};
        argv.insert(argv.end(), extra.begin(), extra.end());
        Process p(argv);
        auto rc = p.wait_exit(30s);
        return std::pair{rc.value_or(-1), p.err()};
    };
    auto [rc1, err1] = run({"--tls-creds", "/nonexistent"});
    CHECK(rc1 == 2);
    CHECK(err1.find("--tls-creds /nonexistent: no ca-cert.pem there") != std::string::npos);
    auto [rc2, err2] = run({"--tls-creds", "/tmp", "--tls-psk", "/tmp/x"});
    CHECK(rc2 == 2);
    CHECK(err2.find("give one of them, not both") != std::string::npos);
    auto bad = psk_file("bad", "xyz");
    auto [rc3, err3] = run({"--tls-psk", bad});
    CHECK(rc3 == 2);
    CHECK(err3.find("expected IDENTITY:HEXKEY") != std::string::npos);
    ::unlink(bad.c_str());
    auto [rc4, err4] = run({"--tls-authz", "x"});
    CHECK(rc4 == 2);
    CHECK(err4.find("--tls-authz needs --tls-creds or --tls-psk") != std::string::npos);
}
