#include "process.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include <cstdlib>
#include <cstring>

namespace ferry::test {

std::string ferry_bin() { return FERRY_BIN; }
std::string testguest_elf() { return TESTGUEST_ELF; }
bool kvm_available() { return ::access("/dev/kvm", R_OK | W_OK) == 0; }

std::string sock(const std::string& name) { return "/tmp/ferry-test-" + std::to_string(::getpid()) + "-" + name + ".sock"; }

std::string write_temp(const std::string& name, const std::string& content) {
    std::string path = "/tmp/ferry-test-" + std::to_string(::getpid()) + "-" + name;
    std::ofstream(path, std::ios::binary) << content;
    return path;
}

namespace {
int sh(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()); }
}  // namespace

bool add_tap(const std::string& name) {
    if (sh("ip tuntap add dev " + name + " mode tap") != 0) return false;
    sh("sysctl -w net.ipv6.conf." + name + ".disable_ipv6=1");
    if (sh("ip link set " + name + " up") == 0) return true;
    del_tap(name);
    return false;
}

void del_tap(const std::string& name) { sh("ip link del " + name); }

int tap_packet_socket(const std::string& name, uint16_t type, int& ifindex) {
    int fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(type));
    sockaddr_ll a{};
    a.sll_family = AF_PACKET;
    a.sll_protocol = htons(type);
    a.sll_ifindex = static_cast<int>(::if_nametoindex(name.c_str()));
    if (fd < 0 || a.sll_ifindex == 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
        if (fd >= 0) ::close(fd);
        return -1;
    }
    ifindex = a.sll_ifindex;
    return fd;
}

Process::Process(std::vector<std::string> argv) {
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    pid_ = ::fork();
    if (pid_ == 0) {
        ::dup2(out[1], 1);
        ::dup2(err[1], 2);
        int devnull = ::open("/dev/null", O_RDONLY);
        ::dup2(devnull, 0);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        std::vector<char*> args;
        for (auto& a : argv) args.push_back(a.data());
        args.push_back(nullptr);
        ::execv(args[0], args.data());
        ::_exit(127);
    }
    ::close(out[1]);
    ::close(err[1]);
    out_fd_ = out[0];
    err_fd_ = err[0];
}

Process::~Process() {
    if (!status_ && pid_ > 0) {
        ::kill(pid_, SIGKILL);
        int st;
        ::waitpid(pid_, &st, 0);
    }
    if (out_fd_ >= 0) ::close(out_fd_);
    if (err_fd_ >= 0) ::close(err_fd_);
}

bool Process::pump(std::chrono::milliseconds timeout) {
    pollfd fds[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
    if (out_fd_ < 0 && err_fd_ < 0) return false;
    int n = ::poll(fds, 2, static_cast<int>(timeout.count()));
    if (n <= 0) return true;
    char buf[65536];
    for (int i = 0; i < 2; ++i) {
        if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        ssize_t r = ::read(fds[i].fd, buf, sizeof(buf));
        if (r <= 0) {
            ::close(fds[i].fd);
            (i == 0 ? out_fd_ : err_fd_) = -1;
            continue;
        }
        if (i == 1) {
            err_.append(buf, static_cast<size_t>(r));
            continue;
        }
        out_partial_.append(buf, static_cast<size_t>(r));
        size_t nl;
        while ((nl = out_partial_.find('\n')) != std::string::npos) {
            out_lines_.push_back(out_partial_.substr(0, nl));
            out_partial_.erase(0, nl + 1);
        }
    }
    return true;
}

std::optional<std::string> Process::wait_line(const std::regex& re, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        for (; scanned_ < out_lines_.size(); ++scanned_) {
            if (std::regex_search(out_lines_[scanned_], re)) return out_lines_[scanned_++];
        }
        auto now = std::chrono::steady_clock::now();
        if (now >= deadline) return std::nullopt;
        if (!pump(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now)) && scanned_ >= out_lines_.size())
            return std::nullopt;
    }
}

std::optional<std::string> Process::wait_err(const std::regex& re, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        std::smatch m;
        if (std::regex_search(err_, m, re)) return m.size() > 1 ? m[1].str() : m[0].str();
        auto now = std::chrono::steady_clock::now();
        if (now >= deadline) return std::nullopt;
        if (!pump(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now))) return std::nullopt;
    }
}

std::optional<int> Process::wait_exit(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!status_) {
        int st = 0;
        pid_t r = ::waitpid(pid_, &st, WNOHANG);
        if (r == pid_) {
            status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            break;
        }
        if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
        pump(std::chrono::milliseconds(20));
    }
    drain();
    return status_;
}

void Process::drain(std::chrono::milliseconds timeout) {
    while ((out_fd_ >= 0 || err_fd_ >= 0)) {
        pollfd fds[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
        if (::poll(fds, 2, static_cast<int>(timeout.count())) <= 0) break;
        pump(std::chrono::milliseconds(0));
    }
}

void Process::signal(int sig) {
    if (!status_) ::kill(pid_, sig);
}

std::string Process::out_text() const {
    std::string s;
    for (const auto& l : out_lines_) s += l + "\n";
    return s + out_partial_;
}

std::optional<std::string> incoming_port(Process& dst) {
    return dst.wait_err(std::regex("incoming migration on tcp:[^ ]*:(\\d+)"), std::chrono::seconds(30));
}

}  // namespace ferry::test
