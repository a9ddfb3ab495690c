#include "migration/channel.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>

#include <algorithm>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <climits>
#include <fmt/format.h>

namespace ferry {

Result<TcpAddress> parse_tcp_address(const std::string& uri) {
    if (uri.rfind("tcp:", 0) != 0) return fail(Domain::Migration, fmt::format("'{}': only tcp:HOST:PORT is supported", uri));
    std::string rest = uri.substr(4);
    std::string host, port;
    if (!rest.empty() && rest[0] == '[') {
        auto close = rest.find(']');
        if (close == std::string::npos || close + 1 >= rest.size() || rest[close + 1] != ':')
            return fail(Domain::Migration, fmt::format("'{}': bad [IPv6]:PORT", uri));
        host = rest.substr(1, close - 1);
        port = rest.substr(close + 2);
    } else {
        auto colon = rest.rfind(':');
        if (colon == std::string::npos) return fail(Domain::Migration, fmt::format("'{}': expected tcp:HOST:PORT", uri));
        host = rest.substr(0, colon);
        port = rest.substr(colon + 1);
    }
    unsigned p = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec != std::errc() || ptr != port.data() + port.size() || p > 65535 || port.empty())
        return fail(Domain::Migration, fmt::format("'{}': bad port '{}'", uri, port));
    if (host.empty()) host = "0.0.0.0";
    return TcpAddress{host, static_cast<uint16_t>(p)};
}

namespace {

struct AddrInfo {
    addrinfo* ai = nullptr;
    ~AddrInfo() {
        if (ai) freeaddrinfo(ai);
    }
};

Result<void> resolve(const TcpAddress& addr, bool passive, AddrInfo& out) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = passive ? AI_PASSIVE : 0;
    int rc = getaddrinfo(addr.host.c_str(), std::to_string(addr.port).c_str(), &hints, &out.ai);
    if (rc != 0) return fail(Domain::Migration, fmt::format("{}: {}", addr.text(), gai_strerror(rc)));
    return {};
}

// Drops the first n bytes from an iovec array (after a partial readv/writev).
void advance_iov(iovec*& iov, int& count, size_t n) {
    while (count > 0 && n >= iov->iov_len) {
        n -= iov->iov_len;
        ++iov;
        --count;
    }
    if (count > 0) {
        iov->iov_base = static_cast<uint8_t*>(iov->iov_base) + n;
        iov->iov_len -= n;
    }
}

void tune(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    int idle = 5, intvl = 2, cnt = 3;
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    unsigned user_timeout_ms = 20000;
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof(user_timeout_ms));
    int buf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
}

}  // namespace

Result<Channel> Channel::connect(const TcpAddress& addr, std::chrono::milliseconds timeout, const TlsConfig& tls) {
    AddrInfo ai;
    if (auto ok = resolve(addr, false, ai); !ok) return std::unexpected(ok.error());
    int last_err = ECONNREFUSED;
    for (addrinfo* a = ai.ai; a; a = a->ai_next) {
        Fd fd(::socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        if (!fd.valid()) {
            last_err = errno;
            continue;
        }
        if (::connect(fd.get(), a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
            last_err = errno;
            continue;
        }
        pollfd p{fd.get(), POLLOUT, 0};
        int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
        if (n <= 0) {
            last_err = n == 0 ? ETIMEDOUT : errno;
            continue;
        }
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            last_err = err;
            continue;
        }
        int flags = fcntl(fd.get(), F_GETFL);
        fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
        tune(fd.get());
        Channel ch(std::move(fd));
        if (tls.creds) {
            if (auto ok = ch.secure_client(tls, addr.host, timeout); !ok)
                return fail(Domain::Migration, fmt::format("{}: {}", addr.text(), ok.error().message()));
        }
        return ch;
    }
    return fail(Domain::Migration, "cannot connect to " + addr.text(), last_err);
}

Channel::Channel(Fd fd) : fd_(std::move(fd)), send_mu_(std::make_unique<std::mutex>()), sent_(std::make_unique<std::atomic<uint64_t>>(0)) {}

Result<void> Channel::set_receive_buffer(uint32_t bytes) {
    int v = static_cast<int>(bytes);
    if (::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVBUF, &v, sizeof(v)) != 0) return fail_errno(Domain::Migration, "SO_RCVBUF");
    return {};
}

namespace {
Result<void> set_timeout(int fd, int opt, std::chrono::milliseconds t, const char* name) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(t.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((t.count() % 1000) * 1000);
    if (::setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof(tv)) != 0) return fail_errno(Domain::Migration, name);
    return {};
}
}  // namespace

Result<void> Channel::set_send_timeout(std::chrono::milliseconds t) {
    if (tls_) tls_->send_timeout_ms = t.count();
    return set_timeout(fd_.get(), SO_SNDTIMEO, t, "SO_SNDTIMEO");
}
Result<void> Channel::set_receive_timeout(std::chrono::milliseconds t) {
    if (tls_) tls_->receive_timeout_ms = t.count();
    return set_timeout(fd_.get(), SO_RCVTIMEO, t, "SO_RCVTIMEO");
}

namespace {
// What SO_SNDTIMEO / SO_RCVTIMEO say now (for the TLS path, which polls).
std::chrono::milliseconds socket_timeout(int fd, int opt) {
    timeval tv{};
    socklen_t len = sizeof(tv);
    if (::getsockopt(fd, SOL_SOCKET, opt, &tv, &len) != 0) return std::chrono::milliseconds(0);
    return std::chrono::milliseconds(tv.tv_sec * 1000 + tv.tv_usec / 1000);
}
}  // namespace

Result<void> Channel::use_tls(Result<std::unique_ptr<TlsSession>> session) {
    if (!session) return std::unexpected(session.error());
    tls_ = std::make_unique<Tls>();
    tls_->session = std::move(*session);
    tls_->send_timeout_ms = socket_timeout(fd_.get(), SO_SNDTIMEO).count();
    tls_->receive_timeout_ms = socket_timeout(fd_.get(), SO_RCVTIMEO).count();
    return {};
}

Result<void> Channel::secure_client(const TlsConfig& cfg, const std::string& host, std::chrono::milliseconds timeout) {
    return use_tls(TlsSession::client(cfg, fd_.get(), host, timeout));
}

Result<void> Channel::secure_server(const TlsConfig& cfg, std::chrono::milliseconds timeout) {
    return use_tls(TlsSession::server(cfg, fd_.get(), timeout));
}

std::string Channel::security() const { return tls_ ? tls_->session->cipher() : std::string(); }

// Gathers the buffers into records of up to 64 KiB: a page and its header go out as
// one record, not two.
Result<void> Channel::tls_send_iov(iovec* iov, int count) {
    constexpr size_t kRecordBatch = 64 << 10;
    auto timeout = std::chrono::milliseconds(tls_->send_timeout_ms.load());
    auto& buf = tls_->staging;
    buf.clear();
    buf.reserve(kRecordBatch);
    auto flush = [&]() -> Result<void> {
        if (buf.empty()) return {};
        auto ok = tls_->session->write_all(buf, timeout);
        if (ok) *sent_ += buf.size();
        buf.clear();
        return ok;
    };
    for (int i = 0; i < count; ++i) {
        auto* p = static_cast<const uint8_t*>(iov[i].iov_base);
        size_t left = iov[i].iov_len;
        while (left > 0) {
            size_t take = std::min(left, kRecordBatch - buf.size());
            buf.insert(buf.end(), p, p + take);
            p += take;
            left -= take;
            if (buf.size() == kRecordBatch)
                if (auto ok = flush(); !ok) return ok;
        }
    }
    return flush();
}

Result<void> Channel::set_unsent_limit(uint32_t bytes) {
    int v = static_cast<int>(bytes);
    if (::setsockopt(fd_.get(), IPPROTO_TCP, TCP_NOTSENT_LOWAT, &v, sizeof(v)) != 0)
        return fail_errno(Domain::Migration, "TCP_NOTSENT_LOWAT");
    return {};
}

Result<void> Channel::send_all(std::span<const uint8_t> data) {
    iovec iov{const_cast<uint8_t*>(data.data()), data.size()};
    return send_iov(&iov, 1);
}

Result<void> Channel::send_iov(iovec* iov, int count) {
    std::lock_guard lock(*send_mu_);
    if (tls_) return tls_send_iov(iov, count);
    while (count > 0) {
        msghdr msg{};
        msg.msg_iov = iov;
        msg.msg_iovlen = static_cast<size_t>(std::min(count, IOV_MAX));
        ssize_t n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);  // a dead peer is an error, not SIGPIPE
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return fail(Domain::Migration, "sending the migration stream: timed out (the peer reads nothing)");
            return fail_errno(Domain::Migration, "sending the migration stream");
        }
        *sent_ += static_cast<uint64_t>(n);
        advance_iov(iov, count, static_cast<size_t>(n));
    }
    return {};
}

Result<void> Channel::recv_exact(std::span<uint8_t> out) {
    if (tls_) return tls_->session->read_exact(out, std::chrono::milliseconds(tls_->receive_timeout_ms.load()));
    size_t done = 0;
    while (done < out.size()) {
        ssize_t n = ::recv(fd_.get(), out.data() + done, out.size() - done, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return fail(Domain::Migration, "receiving the migration stream: timed out (the peer sends nothing)");
        if (n < 0) return fail_errno(Domain::Migration, "receiving the migration stream");
        if (n == 0) return fail(Domain::Migration, "the migration peer closed the connection");
        done += static_cast<size_t>(n);
    }
    return {};
}

Result<void> Channel::recv_iov(iovec* iov, int count) {
    if (tls_) {
        for (int i = 0; i < count; ++i)
            if (auto ok = recv_exact({static_cast<uint8_t*>(iov[i].iov_base), iov[i].iov_len}); !ok) return ok;
        return {};
    }
    while (count > 0) {
        ssize_t n = ::readv(fd_.get(), iov, std::min(count, IOV_MAX));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return fail(Domain::Migration, "receiving the migration stream: timed out (the peer sends nothing)");
        if (n < 0) return fail_errno(Domain::Migration, "receiving the migration stream");
        if (n == 0) return fail(Domain::Migration, "the migration peer closed the connection");
        advance_iov(iov, count, static_cast<size_t>(n));
    }
    return {};
}

Result<bool> Channel::wait_readable(std::chrono::milliseconds timeout) {
    if (tls_ && tls_->session->pending()) return true;
    pollfd p{fd_.get(), POLLIN, 0};
    for (;;) {
        int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail_errno(Domain::Migration, "poll");
        return n > 0;
    }
}

void Channel::cancel() { ::shutdown(fd_.get(), SHUT_RDWR); }

Result<Listener> Listener::listen(const TcpAddress& addr) {
    AddrInfo ai;
    if (auto ok = resolve(addr, true, ai); !ok) return std::unexpected(ok.error());
    int last_err = EADDRNOTAVAIL;
    for (addrinfo* a = ai.ai; a; a = a->ai_next) {
        Fd fd(::socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (!fd.valid()) {
            last_err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (::bind(fd.get(), a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd.get(), 1) != 0) {
            last_err = errno;
            continue;
        }
        sockaddr_storage ss{};
        socklen_t len = sizeof(ss);
        getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len);
        uint16_t port = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                                 : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
        return Listener(std::move(fd), port);
    }
    return fail(Domain::Migration, "cannot listen on " + addr.text(), last_err);
}

Result<Channel> Listener::accept(std::optional<std::chrono::milliseconds> timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout.value_or(std::chrono::milliseconds(0));
    for (;;) {
        if (timeout) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            pollfd p{fd_.get(), POLLIN, 0};
            int r = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(0, left.count())));
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) return fail_errno(Domain::Migration, "waiting for a migration connection");
            if (r == 0) return fail(Domain::Migration, "no migration connection came in time");
        }
        int fd = ::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) {
            tune(fd);
            return Channel(Fd(fd));
        }
        if (errno == EINTR) continue;
        return fail_errno(Domain::Migration, "accepting the migration connection");
    }
}

void Listener::cancel() {
    std::lock_guard lock(*mu_);
    if (fd_.valid()) ::shutdown(fd_.get(), SHUT_RDWR);
}

void Listener::close() {
    std::lock_guard lock(*mu_);
    fd_.reset();
}

}  // namespace ferry
