// Helpers shared by the migration tests (migration_helpers.hpp).
#include "migration_helpers.hpp"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <regex>
#include <thread>

#include "tests/common/elf_builder.hpp"

namespace ferry::test {

using namespace std::chrono_literals;



std::unique_ptr<Process> source(const std::string& qmp, const std::string& mem, int cpus, const std::string& cmdline,
                                std::vector<std::string> extra) {
    std::vector<std::string> argv{ferry_bin(), "run", "--kernel", testguest_elf(), "--mem", mem, "--cpus", std::to_string(cpus),
                                  "--qmp", qmp, "--cmdline", cmdline};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return std::make_unique<Process>(argv);
}

// A destination listening on a free port; returns the port through `port`.
std::unique_ptr<Process> destination(const std::string& mem, int cpus, int& port, const std::string& qmp,
                                     std::vector<std::string> extra) {
    std::vector<std::string> argv{ferry_bin(), "run", "--mem", mem, "--cpus", std::to_string(cpus), "--incoming", "tcp:127.0.0.1:0"};
    if (!qmp.empty()) {
        argv.push_back("--qmp");
        argv.push_back(qmp);
    }
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto p = std::make_unique<Process>(argv);
    auto got = incoming_port(*p);
    INFO(p->err());
    REQUIRE(got);
    port = std::stoi(*got);
    return p;
}

int last_tick(const Process& p) {
    int last = 0;
    std::regex re("^guest: tick=(\\d+) ");
    for (const auto& l : p.out_lines()) {
        std::smatch m;
        if (std::regex_search(l, m, re)) last = std::stoi(m[1]);
    }
    return last;
}

std::unique_ptr<Process> migrate(const std::string& qmp, int port, std::vector<std::string> extra) {
    std::vector<std::string> argv{ferry_bin(), "migrate", "--qmp", qmp, "--to", "tcp:127.0.0.1:" + std::to_string(port)};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return std::make_unique<Process>(argv);
}

std::string qmp_cmd(const std::string& qmp, const std::string& cmd, const std::string& args) {
    std::vector<std::string> argv{ferry_bin(), "qmp", "--qmp", qmp, cmd};
    if (!args.empty()) argv.push_back(args);
    Process p(argv);
    p.wait_exit(30s);
    return p.out_text();
}

nlohmann::json qmp_json(const std::string& qmp, const std::string& cmd, const std::string& args) {
    auto text = qmp_cmd(qmp, cmd, args);
    auto j = nlohmann::json::parse(text, nullptr, false);
    INFO(cmd << ": " << text);
    REQUIRE_FALSE(j.is_discarded());
    return j;
}

nlohmann::json wait_status(const std::string& qmp, const std::string& want, std::chrono::seconds limit) {
    nlohmann::json q;
    auto until = std::chrono::steady_clock::now() + limit;
    do {
        q = qmp_json(qmp, "query-migrate");
        if (q.value("status", "") == want) break;
        std::this_thread::sleep_for(100ms);
    } while (std::chrono::steady_clock::now() < until);
    INFO("waiting for " << want << ": " << q.dump());
    CHECK(q.value("status", "") == want);
    return q;
}

nlohmann::json wait_ram_sent(const std::string& qmp, uint64_t bytes, std::chrono::seconds limit) {
    nlohmann::json q;
    auto sent = [&] { return q.contains("ram") ? q["ram"].value("transferred", uint64_t{0}) : uint64_t{0}; };
    auto until = std::chrono::steady_clock::now() + limit;
    do {
        q = qmp_json(qmp, "query-migrate");
        if (q.value("status", "") == "active" && sent() >= bytes) break;
        std::this_thread::sleep_for(100ms);
    } while (std::chrono::steady_clock::now() < until);
    INFO("waiting for " << bytes << " bytes sent: " << q.dump());
    CHECK(q.value("status", "") == "active");
    CHECK(sent() >= bytes);
    return q;
}

std::string qmp_error(const std::string& qmp, const std::string& cmd, const std::string& args) {
    std::vector<std::string> argv{ferry_bin(), "qmp", "--qmp", qmp, cmd};
    if (!args.empty()) argv.push_back(args);
    Process p(argv);
    CHECK(p.wait_exit(30s) == 1);
    return p.err();
}

std::pair<int, std::string> qmp_try(const std::string& qmp, const std::string& cmd) {
    Process p({ferry_bin(), "qmp", "--qmp", qmp, cmd});
    auto rc = p.wait_exit(30s);
    return {rc.value_or(-1), p.err()};
}

std::string status_of(const std::string& qmp) { return qmp_json(qmp, "query-status").at("status").get<std::string>(); }

nlohmann::json wait_migration_end(const std::string& qmp) {
    nlohmann::json q;
    for (int i = 0; i < 300; ++i) {
        q = qmp_json(qmp, "query-migrate");
        auto st = q.value("status", "");
        if (st == "completed" || st == "failed" || st == "cancelled") break;
        std::this_thread::sleep_for(100ms);
    }
    return q;
}

void ticks_go_on(Process& p, Process& src) {
    src.drain();
    int after = last_tick(src);
    for (int i = 0; i < 300; ++i) {
        p.drain(100ms);
        if (last_tick(p) > after) break;
    }
    INFO("after tick " << after << ": " << p.out_text());
    CHECK(last_tick(p) > after);
    CHECK(p.out_text().find("corrupt=0") != std::string::npos);
    CHECK(p.out_text().find("CORRUPT") == std::string::npos);
}

int tcp_connect(int port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

int free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    socklen_t len = sizeof(a);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
}

// Migrates a running source to a fresh destination and checks the guest goes on
// there: ticks continue from the source's count, no page is corrupt.
void migrate_and_check(Process& src, const std::string& src_qmp, const std::string& mem, int cpus, Process*& dst_out,
                       std::unique_ptr<Process>& dst_holder, const std::string& dst_qmp, std::vector<std::string> mig_extra,
                       std::vector<std::string> dst_extra) {
    int port = 0;
    dst_holder = destination(mem, cpus, port, dst_qmp, std::move(dst_extra));
    auto mig = migrate(src_qmp, port, std::move(mig_extra));
    auto mig_rc = mig->wait_exit(kLong);
    INFO("migrate: " << mig->out_text() << mig->err() << "\nsource: " << src.err() << "\ndest: " << dst_holder->err());
    REQUIRE(mig_rc == 0);
    CHECK(mig->out_text().find("migration completed") != std::string::npos);
    // The source hands over and exits.
    auto src_rc = src.wait_exit(30s);
    REQUIRE(src_rc == 0);
    int before = last_tick(src);
    REQUIRE(before >= 1);
    // The destination continues the same guest.
    auto next = dst_holder->wait_line(std::regex("^guest: tick=\\d+ "), 30s);
    REQUIRE(next);
    int first = std::stoi(next->substr(std::string("guest: tick=").size()));
    CHECK(first > before);
    CHECK(first <= before + 2);  // +2 when the line in flight was split by the switch
    CHECK(next->find("corrupt=0") != std::string::npos);
    auto later = dst_holder->wait_line(std::regex("^guest: tick=" + std::to_string(first + 1) + " "), 30s);
    REQUIRE(later);
    CHECK(later->find("corrupt=0") != std::string::npos);
    CHECK(src.out_text().find("CORRUPT") == std::string::npos);
    CHECK(dst_holder->out_text().find("CORRUPT") == std::string::npos);
    dst_out = dst_holder.get();
}


}  // namespace ferry::test
