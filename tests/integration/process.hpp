// A child process for the integration tests: argv, stdout/stderr captured through
// pipes, line-by-line waits with timeouts, signals, and exit status.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <regex>
#include <string>
#include <vector>

namespace ferry::test {

class Process {
public:
    explicit Process(std::vector<std::string> argv);
    Process(const Process&) = delete;
    Process& operator=(const Process&) = delete;
    ~Process();  // SIGKILLs and reaps the child if it is still running

    // Waits until a stdout line matches `re`; returns that line.
    std::optional<std::string> wait_line(const std::regex& re, std::chrono::milliseconds timeout);
    // Waits until stderr contains a match of `re`; returns the match's first group
    // (or the whole match).
    std::optional<std::string> wait_err(const std::regex& re, std::chrono::milliseconds timeout);
    // Waits for the child to exit; returns its exit status (128+signal if killed).
    std::optional<int> wait_exit(std::chrono::milliseconds timeout);
    void signal(int sig);
    pid_t pid() const { return pid_; }

    const std::vector<std::string>& out_lines() const { return out_lines_; }
    const std::string& err() const { return err_; }
    std::string out_text() const;
    // Reads whatever output is pending without blocking long.
    void drain(std::chrono::milliseconds timeout = std::chrono::milliseconds(50));

private:
    bool pump(std::chrono::milliseconds timeout);  // false when both pipes are closed

    pid_t pid_ = -1;
    int out_fd_ = -1, err_fd_ = -1;
    std::string out_partial_, err_;
    std::vector<std::string> out_lines_;
    size_t scanned_ = 0;
    std::optional<int> status_;
};

// The port a `ferry run --incoming tcp:HOST:0` process printed on stderr ("incoming
// migration on tcp:HOST:PORT"), waiting up to 30 s.
std::optional<std::string> incoming_port(Process& dst);

// Tap devices for the virtio-net tests (need CAP_NET_ADMIN): add_tap creates `name`,
// turns its IPv6 off (no router solicitations to the guest) and brings it up; false when
// it cannot. tap_packet_socket: a packet socket bound to `name` for frames of EtherType
// `type`, or -1; `ifindex` gets the tap's index.
bool add_tap(const std::string& name);
void del_tap(const std::string& name);
int tap_packet_socket(const std::string& name, uint16_t type, int& ifindex);

// Paths baked in by the build.
std::string ferry_bin();
std::string testguest_elf();
bool kvm_available();

// Shared by every test file: a QMP socket path for this test process
// (/tmp/ferry-test-PID-NAME.sock; ferry replaces a stale one), and a file written with
// `content` (/tmp/ferry-test-PID-NAME), its path returned.
std::string sock(const std::string& name);
std::string write_temp(const std::string& name, const std::string& content);

}  // namespace ferry::test
