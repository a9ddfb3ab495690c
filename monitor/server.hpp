// QmpServer: the QMP monitor's UNIX socket, served on the main thread's EventLoop.
//
//   path (mode 0600) --accept--> QmpSession --request--> CommandTable --> reply
//                                     ^                                      |
//   emit_event() ---------------------+---- to every negotiated session ----+
//
// The socket file is created mode 0600 and removed when the server goes (only if it
// is still the file this server created). At start, an existing socket file nobody
// listens on (connect() is refused) is a stale leftover of a dead process and is
// replaced; one with a live listener is an error, as is a file that is not a socket.
// Sessions are non-blocking: one slow or dead client never blocks the guest or the
// other clients (see session.hpp for the per-client limits).
//
// Who is served: the peer's credentials (SO_PEERCRED) must name ferry's own effective
// uid or root; anyone else is closed at once, even if the socket file's mode was
// widened. A client that has not sent qmp_capabilities within `negotiation_timeout` is
// closed, so idle connections cannot hold every slot (`max_clients`).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/event_loop.hpp"
#include "base/fd.hpp"
#include "monitor/dispatcher.hpp"
#include "monitor/session.hpp"

namespace ferry {

struct QmpServerLimits {
    size_t max_clients = 32;
    size_t max_output = 1 << 20;  // bytes queued for one client before it is dropped
    std::chrono::milliseconds negotiation_timeout{10000};
};

class QmpServer {
public:
    // Binds and listens on `path`, and watches it on `loop`. `loop` and `commands`
    // must outlive the server.
    static Result<std::unique_ptr<QmpServer>> listen(EventLoop& loop, const std::string& path, const CommandTable& commands,
                                                     QmpServerLimits limits = {});
    QmpServer(const QmpServer&) = delete;
    QmpServer& operator=(const QmpServer&) = delete;
    ~QmpServer();  // close(0)

    // Sends an event to every client past capabilities negotiation.
    void emit_event(std::string_view name, nlohmann::json data = nullptr);
    // Gives queued output up to `flush_timeout` to go out, then closes every client
    // and the socket and removes the socket file. Idempotent.
    void close(std::chrono::milliseconds flush_timeout);

    const std::string& path() const { return path_; }
    size_t client_count() const { return clients_.size(); }

private:
    struct Client {
        std::unique_ptr<QmpSession> session;
        bool watching_out = false;  // EPOLLOUT is on while output waits
        std::chrono::steady_clock::time_point negotiate_by;
    };

    QmpServer(EventLoop& loop, std::string path, Fd listener, Fd timer, dev_t dev, ino_t ino, const CommandTable& commands,
              QmpServerLimits limits);
    void on_accept();
    bool peer_allowed(int fd);
    void on_timer();
    void arm_timer();  // for the earliest negotiation deadline, or off
    void on_client(int fd, uint32_t events);
    void rewatch(Client& c);
    void sweep();  // closes dead sessions; never while one is being served

    EventLoop& loop_;
    std::string path_;
    Fd listener_;
    Fd timer_;  // timerfd: negotiation deadlines
    dev_t dev_;
    ino_t ino_;
    const CommandTable& commands_;
    QmpServerLimits limits_;
    std::map<int, Client> clients_;
    bool serving_ = false;
    bool closed_ = false;
};

}  // namespace ferry
