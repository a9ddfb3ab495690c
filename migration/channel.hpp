// The migration transport: one TCP connection, full duplex (the destination's
// replies and postcopy page requests come back on it). `tcp:HOST:PORT` addresses.
// Every connection has TCP keepalive (idle 5 s, then 3 probes 2 s apart) and
// TCP_USER_TIMEOUT (20 s of unacknowledged data), so a dead peer or a partitioned
// network ends a blocked send or receive in about 20 s instead of TCP's ~15 minutes.
// Blocking I/O on the migration threads; cancel() from another thread shuts the
// socket down so a blocked send/recv returns at once. Sends are serialized (one
// sender at a time writes a whole section), so one thread may receive while others
// send.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "migration/tls.hpp"

namespace ferry {

struct TcpAddress {
    std::string host;
    uint16_t port;
    std::string text() const { return "tcp:" + host + ":" + std::to_string(port); }
};
// Parses "tcp:HOST:PORT" (HOST may be a name, an IPv4 address or [IPv6]).
Result<TcpAddress> parse_tcp_address(const std::string& uri);

class Channel {
public:
    // With TLS credentials, the handshake too (within the same timeout).
    static Result<Channel> connect(const TcpAddress& addr, std::chrono::milliseconds timeout, const TlsConfig& tls = {});
    explicit Channel(Fd fd);

    Result<void> send_all(std::span<const uint8_t> data);
    Result<void> send_iov(iovec* iov, int count);  // whole, under the send lock; the iovec array is modified
    Result<void> recv_exact(std::span<uint8_t> out);
    Result<void> recv_iov(iovec* iov, int count);  // fills every buffer; the array is modified
    // Waits up to `timeout` for data to read; false on timeout.
    Result<bool> wait_readable(std::chrono::milliseconds timeout);
    // Unblocks any send/recv in progress (thread-safe); the channel is then dead.
    void cancel();
    // Caps the bytes queued in the socket but not yet sent (TCP_NOTSENT_LOWAT): a
    // blocking send waits until the queue drains below it, so an urgent section sent
    // next waits behind at most this much.
    Result<void> set_unsent_limit(uint32_t bytes);
    // Caps this end's receive buffer (SO_RCVBUF): what a peer can queue here unread,
    // ahead of an urgent section it sends next.
    Result<void> set_receive_buffer(uint32_t bytes);
    // A send or receive that makes no progress for this long fails ("timed out");
    // zero: wait as long as it takes (the default).
    Result<void> set_send_timeout(std::chrono::milliseconds t);
    Result<void> set_receive_timeout(std::chrono::milliseconds t);
    uint64_t bytes_sent() const { return sent_->load(std::memory_order_relaxed); }
    int fd() const { return fd_.get(); }

    // TLS (migration/tls.hpp): the handshake, as the client that dialled `host` or as
    // the server; from then on every send and receive goes through it.
    Result<void> secure_client(const TlsConfig& cfg, const std::string& host, std::chrono::milliseconds timeout);
    Result<void> secure_server(const TlsConfig& cfg, std::chrono::milliseconds timeout);
    // "TLSv1.3 TLS_AES_256_GCM_SHA384", or "" on a plain connection.
    std::string security() const;

private:
    struct Tls {
        std::unique_ptr<TlsSession> session;
        // Its socket is non-blocking: the timeouts SO_SNDTIMEO/SO_RCVTIMEO would give.
        std::atomic<int64_t> send_timeout_ms{0}, receive_timeout_ms{0};
        std::vector<uint8_t> staging;  // send_iov gathers into whole records (under the send lock)
    };
    Result<void> tls_send_iov(iovec* iov, int count);
    // After a handshake: every send and receive goes through `session` from now on.
    Result<void> use_tls(Result<std::unique_ptr<TlsSession>> session);

    Fd fd_;
    std::unique_ptr<Tls> tls_;
    std::unique_ptr<std::mutex> send_mu_;
    std::unique_ptr<std::atomic<uint64_t>> sent_;
};

class Listener {
public:
    static Result<Listener> listen(const TcpAddress& addr);
    // Blocks until a peer connects (at most `timeout`, when given), or cancel() is called.
    Result<Channel> accept(std::optional<std::chrono::milliseconds> timeout = std::nullopt);
    void cancel();
    // Stops listening: a peer that connects now is refused.
    void close();
    uint16_t port() const { return port_; }

private:
    Listener(Fd fd, uint16_t port) : fd_(std::move(fd)), port_(port) {}
    std::unique_ptr<std::mutex> mu_ = std::make_unique<std::mutex>();  // fd_ against cancel() from other threads
    Fd fd_;
    uint16_t port_;
};

}  // namespace ferry
