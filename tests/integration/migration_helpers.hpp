// Helpers shared by the migration tests: a source, a destination and `ferry migrate`
// as a user runs them, QMP one-shots, and the check that a migrated guest goes on.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "process.hpp"

namespace ferry::test {

inline constexpr auto kLong = std::chrono::seconds(120);

// A socket path unique to this test process.
std::string sock(const std::string& name);
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
// Migrates a running source to a fresh destination and checks the guest goes on
// there: ticks continue from the source's count, no page is corrupt.
void migrate_and_check(Process& src, const std::string& src_qmp, const std::string& mem, int cpus, Process*& dst_out,
                       std::unique_ptr<Process>& dst_holder, const std::string& dst_qmp = "",
                       std::vector<std::string> mig_extra = {}, std::vector<std::string> dst_extra = {});

}  // namespace ferry::test
