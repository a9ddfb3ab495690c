// Who the QMP server serves (monitor/server.hpp): only peers running as ferry's own uid
// or as root (SO_PEERCRED), and only clients that negotiate within the deadline. A real
// server on a real UNIX socket, its loop on a thread of its own.
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <poll.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "base/event_loop.hpp"
#include "monitor/server.hpp"

using namespace ferry;
using namespace std::chrono_literals;

namespace {

// A QmpServer whose loop runs on its own thread until the fixture goes.
struct Served {
    explicit Served(QmpServerLimits limits) {
        path = "/tmp/ferry-qmp-unit-" + std::to_string(::getpid()) + ".sock";
        auto l = EventLoop::create();
        REQUIRE(l);
        loop = std::make_unique<EventLoop>(std::move(*l));
        auto s = QmpServer::listen(*loop, path, commands, limits);
        REQUIRE(s);
        server = std::move(*s);
        stop = Fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        REQUIRE(loop->watch(stop.get(), EPOLLIN, [this](uint32_t) { loop->stop(); }));
        thread = std::thread([this] { (void)loop->run(); });
    }
    ~Served() {
        uint64_t one = 1;
        [[maybe_unused]] ssize_t n = ::write(stop.get(), &one, sizeof(one));
        thread.join();
        server.reset();
    }
    std::string path;
    CommandTable commands;
    std::unique_ptr<EventLoop> loop;
    std::unique_ptr<QmpServer> server;
    Fd stop{-1};
    std::thread thread;
};

int connect_to(const std::string& path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path.data(), path.size());
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

// What arrives within `timeout`; `eof` is set when the server closed the connection.
std::string read_for(int fd, std::chrono::milliseconds timeout, bool& eof, const std::string& until = {}) {
    std::string got;
    eof = false;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (!until.empty() && got.find(until) != std::string::npos) break;
        pollfd p{fd, POLLIN, 0};
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (::poll(&p, 1, static_cast<int>(std::max<long>(left.count(), 1))) <= 0) continue;
        char buf[4096];
        ssize_t n = ::read(fd, buf, sizeof(buf));
        if (n <= 0) {
            eof = true;
            break;
        }
        got.append(buf, static_cast<size_t>(n));
    }
    return got;
}

bool send_line(int fd, const std::string& s) {
    std::string line = s + "\n";
    return ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
}

}  // namespace

TEST_CASE("QMP: a client that never negotiates is closed at the deadline; one that does is served", "[qmp]") {
    Served s(QmpServerLimits{.max_clients = 4, .max_output = 1 << 20, .negotiation_timeout = 400ms});
    int idle = connect_to(s.path), busy = connect_to(s.path);
    REQUIRE(idle >= 0);
    REQUIRE(busy >= 0);
    bool eof = false;
    CHECK(read_for(idle, 5s, eof, "\n").find("\"QMP\"") != std::string::npos);
    CHECK(read_for(busy, 5s, eof, "\n").find("\"QMP\"") != std::string::npos);
    REQUIRE(send_line(busy, R"({"execute": "qmp_capabilities"})"));
    CHECK(read_for(busy, 5s, eof, "\n").find("\"return\"") != std::string::npos);
    // The idle one is closed once its 400 ms are up, with nothing more said.
    auto rest = read_for(idle, 5s, eof);
    CHECK(eof);
    CHECK(rest.empty());
    // The negotiated one outlives the deadline and is still answered.
    std::this_thread::sleep_for(600ms);
    REQUIRE(send_line(busy, R"({"execute": "query-version", "id": 7})"));
    auto reply = read_for(busy, 5s, eof, "\n");
    CHECK_FALSE(eof);
    CHECK(reply.find("\"return\"") != std::string::npos);
    CHECK(reply.find("7") != std::string::npos);
    // A slot freed by a dropped idle client can be taken again.
    int again = connect_to(s.path);
    REQUIRE(again >= 0);
    CHECK(read_for(again, 5s, eof, "\n").find("\"QMP\"") != std::string::npos);
    ::close(idle);
    ::close(busy);
    ::close(again);
}

TEST_CASE("QMP: a peer running as another uid is refused even when the socket file lets it connect", "[qmp]") {
    if (::geteuid() != 0) {
        WARN("not root: cannot connect as another uid here; SO_PEERCRED refusal not exercised");
        return;
    }
    Served s(QmpServerLimits{});
    REQUIRE(::chmod(s.path.c_str(), 0777) == 0);  // a careless chmod: only SO_PEERCRED stands in the way
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        // nobody: connects (the file allows it) and must be closed without a greeting.
        // Only system calls here (no allocation: another thread may hold malloc's lock).
        if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) ::_exit(3);
        int fd = connect_to(s.path);
        if (fd < 0) ::_exit(4);
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 5000) <= 0) ::_exit(1);  // still open after 5 s: served
        char buf[64];
        ::_exit(::read(fd, buf, sizeof(buf)) == 0 ? 0 : 1);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);  // 1: served; 3: could not drop to nobody; 4: connect failed
    // Root (and ferry's own uid, the same here) is served.
    int fd = connect_to(s.path);
    REQUIRE(fd >= 0);
    bool eof = false;
    CHECK(read_for(fd, 5s, eof, "\n").find("\"QMP\"") != std::string::npos);
    ::close(fd);
}
