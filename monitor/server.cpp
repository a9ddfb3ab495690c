#include "monitor/server.hpp"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <vector>

#include <fmt/format.h>

#include "base/log.hpp"

namespace ferry {

namespace {

Result<sockaddr_un> unix_address(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof(addr.sun_path))
        return fail(Domain::Monitor, fmt::format("QMP socket path '{}' must be 1 to {} bytes long", path, sizeof(addr.sun_path) - 1));
    std::memcpy(addr.sun_path, path.data(), path.size());
    return addr;
}

// An existing file at `path`: a stale socket is removed, anything else refused.
Result<void> clear_stale_socket(const std::string& path, const sockaddr_un& addr) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return {};
        return fail_errno(Domain::Monitor, fmt::format("QMP socket '{}'", path));
    }
    if (!S_ISSOCK(st.st_mode)) return fail(Domain::Monitor, fmt::format("QMP socket '{}': the file exists and is not a socket", path));
    Fd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!probe.valid()) return fail_errno(Domain::Monitor, "socket");
    if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0 || errno == EAGAIN)
        return fail(Domain::Monitor, fmt::format("QMP socket '{}' is in use by a running process", path));
    if (errno != ECONNREFUSED) return fail_errno(Domain::Monitor, fmt::format("QMP socket '{}'", path));
    logger("qmp")->info("replacing stale QMP socket '{}'", path);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
        return fail_errno(Domain::Monitor, fmt::format("cannot remove stale QMP socket '{}'", path));
    return {};
}

}  // namespace

QmpServer::QmpServer(EventLoop& loop, std::string path, Fd listener, Fd timer, dev_t dev, ino_t ino, const CommandTable& commands,
                     QmpServerLimits limits)
    : loop_(loop), path_(std::move(path)), listener_(std::move(listener)), timer_(std::move(timer)), dev_(dev), ino_(ino),
      commands_(commands), limits_(limits) {}

QmpServer::~QmpServer() { close(std::chrono::milliseconds(0)); }

Result<std::unique_ptr<QmpServer>> QmpServer::listen(EventLoop& loop, const std::string& path, const CommandTable& commands,
                                                     QmpServerLimits limits) {
    auto addr = unix_address(path);
    if (!addr) return std::unexpected(addr.error());
    if (auto ok = clear_stale_socket(path, *addr); !ok) return std::unexpected(ok.error());

    Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return fail_errno(Domain::Monitor, "socket");
    // Linux gives the socket file the mode of the socket's inode: 0600 from the
    // start, with no window in which others could connect; chmod again after bind
    // for kernels that do not.
    ::fchmod(fd.get(), 0600);
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) != 0) {
        if (errno == EADDRINUSE) return fail(Domain::Monitor, fmt::format("QMP socket '{}' is in use by a running process", path));
        return fail_errno(Domain::Monitor, fmt::format("cannot create QMP socket '{}'", path));
    }
    struct stat st {};
    if (::chmod(path.c_str(), 0600) != 0 || ::stat(path.c_str(), &st) != 0) {
        int err = errno;
        ::unlink(path.c_str());
        return fail(Domain::Monitor, fmt::format("QMP socket '{}'", path), err);
    }
    if (::listen(fd.get(), 16) != 0) {
        int err = errno;
        ::unlink(path.c_str());
        return fail(Domain::Monitor, fmt::format("listen on QMP socket '{}'", path), err);
    }
    Fd timer(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
    if (!timer.valid()) {
        int err = errno;
        ::unlink(path.c_str());
        return fail(Domain::Monitor, "timerfd for the QMP monitor", err);
    }
    std::unique_ptr<QmpServer> server(new QmpServer(loop, path, std::move(fd), std::move(timer), st.st_dev, st.st_ino, commands, limits));
    QmpServer* self = server.get();
    if (auto ok = loop.watch(self->listener_.get(), EPOLLIN, [self](uint32_t) { self->on_accept(); }); !ok)
        return std::unexpected(ok.error());  // the destructor removes the file
    if (auto ok = loop.watch(self->timer_.get(), EPOLLIN, [self](uint32_t) { self->on_timer(); }); !ok)
        return std::unexpected(ok.error());
    logger("qmp")->info("QMP monitor listening on '{}'", path);
    return server;
}

void QmpServer::on_accept() {
    for (;;) {
        Fd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd.valid()) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) logger("qmp")->warn("accept on '{}': {}", path_, std::strerror(errno));
            return;
        }
        if (!peer_allowed(fd.get())) continue;  // closes it
        if (clients_.size() >= limits_.max_clients) {
            logger("qmp")->warn("QMP client refused: already {} clients", clients_.size());
            continue;  // closes it
        }
        int raw = fd.get();
        auto session = std::make_unique<QmpSession>(std::move(fd), limits_.max_output);
        auto ok = loop_.watch(raw, EPOLLIN | EPOLLRDHUP, [this, raw](uint32_t events) { on_client(raw, events); });
        if (!ok) {
            logger("qmp")->warn("QMP client dropped: {}", ok.error().message());
            continue;
        }
        logger("qmp")->debug("QMP client {} connected", raw);
        Client& c = clients_[raw];
        c.session = std::move(session);
        c.negotiate_by = std::chrono::steady_clock::now() + limits_.negotiation_timeout;
        serving_ = true;
        c.session->send(qmp_greeting());
        serving_ = false;
        rewatch(c);
        sweep();
        arm_timer();
    }
}

bool QmpServer::peer_allowed(int fd) {
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
        logger("qmp")->warn("QMP client refused: SO_PEERCRED: {}", std::strerror(errno));
        return false;
    }
    if (cred.uid == 0 || cred.uid == ::geteuid()) return true;
    logger("qmp")->warn("QMP client refused: pid {} runs as uid {}; ferry serves only its own uid ({}) and root", cred.pid,
                        cred.uid, ::geteuid());
    return false;
}

void QmpServer::on_timer() {
    uint64_t expirations;
    [[maybe_unused]] ssize_t n = ::read(timer_.get(), &expirations, sizeof(expirations));
    const auto now = std::chrono::steady_clock::now();
    for (auto& [fd, c] : clients_) {
        if (c.session->dead() || c.session->command_mode() || c.negotiate_by > now) continue;
        c.session->kill(fmt::format("no qmp_capabilities within {} ms", limits_.negotiation_timeout.count()));
    }
    sweep();
    arm_timer();
}

void QmpServer::arm_timer() {
    if (closed_ || !timer_.valid()) return;
    std::optional<std::chrono::steady_clock::time_point> first;
    for (const auto& [fd, c] : clients_)
        if (!c.session->dead() && !c.session->command_mode() && (!first || c.negotiate_by < *first)) first = c.negotiate_by;
    itimerspec spec{};
    if (first) {
        auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(*first - std::chrono::steady_clock::now());
        if (left.count() < 1000000) left = std::chrono::nanoseconds(1000000);
        spec.it_value.tv_sec = static_cast<time_t>(left.count() / 1000000000);
        spec.it_value.tv_nsec = static_cast<long>(left.count() % 1000000000);
    }
    ::timerfd_settime(timer_.get(), 0, &spec, nullptr);
}

void QmpServer::on_client(int fd, uint32_t events) {
    auto it = clients_.find(fd);
    if (it == clients_.end()) return;
    Client& c = it->second;
    serving_ = true;
    try {
        if (events & EPOLLOUT) c.session->flush();
        if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) c.session->on_readable(commands_);
    } catch (const std::exception& e) {
        // Untrusted input must never take the loop down: drop this client instead.
        c.session->kill(std::string("internal error: ") + e.what());
    }
    serving_ = false;
    if (!c.session->dead()) rewatch(c);
    sweep();
}

void QmpServer::rewatch(Client& c) {
    bool want = c.session->wants_write();
    if (want == c.watching_out) return;
    int fd = c.session->fd();
    uint32_t events = EPOLLIN | EPOLLRDHUP | (want ? EPOLLOUT : 0u);
    if (auto ok = loop_.watch(fd, events, [this, fd](uint32_t ev) { on_client(fd, ev); }); !ok) {
        c.session->kill(ok.error().message());
        return;
    }
    c.watching_out = want;
}

void QmpServer::sweep() {
    if (serving_) return;
    for (auto it = clients_.begin(); it != clients_.end();) {
        if (!it->second.session->dead()) {
            ++it;
            continue;
        }
        logger("qmp")->info("QMP client {} closed: {}", it->first, it->second.session->why());
        loop_.unwatch(it->first);
        it = clients_.erase(it);  // closes the socket
    }
}

void QmpServer::emit_event(std::string_view name, nlohmann::json data) {
    if (closed_) return;
    auto event = qmp_event(name, std::move(data));
    bool was_serving = serving_;
    serving_ = true;
    for (auto& [fd, c] : clients_) {
        if (!c.session->command_mode()) continue;  // QEMU sends events only after negotiation
        c.session->send(event);
        if (!c.session->dead()) rewatch(c);
    }
    serving_ = was_serving;
    sweep();
}

void QmpServer::close(std::chrono::milliseconds flush_timeout) {
    if (closed_) return;
    closed_ = true;
    auto deadline = std::chrono::steady_clock::now() + flush_timeout;
    for (;;) {
        std::vector<pollfd> pending;
        for (auto& [fd, c] : clients_) {
            if (!c.session->dead() && c.session->wants_write()) pending.push_back({fd, POLLOUT, 0});
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (pending.empty() || left.count() <= 0) break;
        if (::poll(pending.data(), pending.size(), static_cast<int>(left.count())) < 0 && errno != EINTR) break;
        for (const auto& p : pending) {
            if (p.revents) clients_[p.fd].session->flush();
        }
    }
    for (auto& [fd, c] : clients_) loop_.unwatch(fd);
    clients_.clear();
    loop_.unwatch(listener_.get());
    listener_.reset();
    if (timer_.valid()) loop_.unwatch(timer_.get());
    timer_.reset();
    // Remove the socket file only if it is still ours (not a successor's).
    struct stat st {};
    if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) ::unlink(path_.c_str());
}

}  // namespace ferry
