// Helpers shared by the migration tests: a source, a destination and `ferry migrate`
// as a user runs them, QMP one-shots, and the check that a migrated guest goes on.
#pragma once

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "process.hpp"

namespace ferry::test {

inline constexpr auto kLong = std::chrono::seconds(120);

// `ferry run` of the test guest with a QMP socket.
std::unique_ptr<Process> source(const std::string& qmp, const std::string& mem, int cpus, const std::string& cmdline,
                                std::vector<std::string> extra = {});
// A destination listening on a free port; returns the port through `port`.
std::unique_ptr<Process> destination(const std::string& mem, int cpus, int& port, const std::string& qmp = "",
                                     std::vector<std::string> extra = {});
// The last "guest: tick=N" a process printed.
int last_tick(const Process& p);
std::unique_ptr<Process> migrate(const std::string& qmp, int port, std::vector<std::string> extra = {});
// `ferry qmp`: the reply's text.
std::string qmp_cmd(const std::string& qmp, const std::string& cmd, const std::string& args = "");
// `ferry qmp` whose reply must be JSON (checked): the reply.
nlohmann::json qmp_json(const std::string& qmp, const std::string& cmd, const std::string& args = "");
// query-migrate once its status is `want` (checked), polling for up to `limit`.
nlohmann::json wait_status(const std::string& qmp, const std::string& want,
                           std::chrono::seconds limit = std::chrono::seconds(60));
// Waits until the outgoing migration at `qmp` is active and has sent at least `bytes`
// of RAM (a point in the middle of a migration, instead of a sleep).
nlohmann::json wait_ram_sent(const std::string& qmp, uint64_t bytes, std::chrono::seconds limit = std::chrono::seconds(60));
// `ferry qmp` of a command that must fail (checked: status 1): its error line.
std::string qmp_error(const std::string& qmp, const std::string& cmd, const std::string& args = "");
// `ferry qmp` of a command: its exit status and stderr (the error line).
std::pair<int, std::string> qmp_try(const std::string& qmp, const std::string& cmd);
// query-status's status.
std::string status_of(const std::string& qmp);
// query-migrate once it reads completed, failed or cancelled (or after 30 s).
nlohmann::json wait_migration_end(const std::string& qmp);
// The guest goes on in `p` beyond the last tick `src` (drained first) printed, with no
// corrupt page.
void ticks_go_on(Process& p, Process& src);
// A TCP connection to 127.0.0.1:port (-1 when refused).
int tcp_connect(int port);
// A loopback port free a moment ago.
int free_port();
// Migrates a running source to a fresh destination and checks the guest goes on
// there: ticks continue from the source's count, no page is corrupt.
void migrate_and_check(Process& src, const std::string& src_qmp, const std::string& mem, int cpus, Process*& dst_out,
                       std::unique_ptr<Process>& dst_holder, const std::string& dst_qmp = "",
                       std::vector<std::string> mig_extra = {}, std::vector<std::string> dst_extra = {});

}  // namespace ferry::test
