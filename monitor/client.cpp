#include "monitor/client.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "monitor/qmp_protocol.hpp"

namespace ferry {

namespace {

using Clock = std::chrono::steady_clock;

// Waits for `events` on `fd` until `deadline`; false on timeout.
Result<bool> wait_for(int fd, short events, Clock::time_point deadline) {
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) return false;
        pollfd p{fd, events, 0};
        int n = ::poll(&p, 1, static_cast<int>(left));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail_errno(Domain::Monitor, "poll");
        if (n > 0) return true;
    }
}

}  // namespace

Result<QmpClient> QmpClient::connect(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof(addr.sun_path))
        return fail(Domain::Monitor, fmt::format("QMP socket path '{}' must be 1 to {} bytes long", path, sizeof(addr.sun_path) - 1));
    std::memcpy(addr.sun_path, path.data(), path.size());
    Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return fail_errno(Domain::Monitor, "socket");
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0)
        return fail_errno(Domain::Monitor, fmt::format("cannot connect to QMP socket '{}'", path));
    return QmpClient(std::move(fd), path);
}

Result<void> QmpClient::send_line(const std::string& line, Clock::time_point deadline) {
    size_t off = 0;
    while (off < line.size()) {
        ssize_t n = ::send(fd_.get(), line.data() + off, line.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            off += static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            auto ready = wait_for(fd_.get(), POLLOUT, deadline);
            if (!ready) return std::unexpected(ready.error());
            if (!*ready) return fail(Domain::Monitor, fmt::format("QMP socket '{}': timed out sending", path_));
            continue;
        }
        return fail_errno(Domain::Monitor, fmt::format("QMP socket '{}': send", path_));
    }
    return {};
}

Result<nlohmann::json> QmpClient::read_message(Clock::time_point deadline) {
    for (;;) {
        while (next_ < ready_.size()) {
            auto& item = ready_[next_++];
            if (item.too_deep) return fail(Domain::Monitor, fmt::format("QMP socket '{}': a message nests too deep", path_));
            auto msg = qmp_parse(item.text);
            if (!msg) return fail(Domain::Monitor, fmt::format("QMP socket '{}': {}", path_, msg.error().desc));
            if (!msg->is_object()) return fail(Domain::Monitor, fmt::format("QMP socket '{}': a message is not a JSON object", path_));
            return std::move(*msg);
        }
        ready_.clear();
        next_ = 0;
        auto ready = wait_for(fd_.get(), POLLIN, deadline);
        if (!ready) return std::unexpected(ready.error());
        if (!*ready) return fail(Domain::Monitor, fmt::format("QMP socket '{}': timed out waiting for the server", path_));
        char buf[65536];
        ssize_t n = ::recv(fd_.get(), buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        if (n < 0) return fail_errno(Domain::Monitor, fmt::format("QMP socket '{}': receive", path_));
        if (n == 0) return fail(Domain::Monitor, fmt::format("QMP socket '{}': the server closed the connection", path_));
        if (stream_.feed(std::string_view(buf, static_cast<size_t>(n)), ready_) != JsonStream::Status::Ok)
            return fail(Domain::Monitor, fmt::format("QMP socket '{}': a message is too long", path_));
    }
}

void QmpClient::drain_events(std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
        auto msg = read_message(deadline);
        if (!msg) return;  // closed, timed out, or garbage: nothing more to take
        if (msg->contains("event")) events_.push_back(std::move(*msg));
    }
}

Result<nlohmann::json> QmpClient::handshake(std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    auto greeting = read_message(deadline);
    if (!greeting) return greeting;
    if (!greeting->contains("QMP"))
        return fail(Domain::Monitor, fmt::format("QMP socket '{}': no QMP greeting (is it a QMP monitor?)", path_));
    auto reply = execute("qmp_capabilities", nlohmann::json::object(), std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
    if (!reply) return std::unexpected(reply.error());
    if (!reply->contains("return"))
        return fail(Domain::Monitor, fmt::format("QMP socket '{}': capabilities negotiation failed: {}", path_, qmp_serialize(*reply)));
    return greeting;
}

Result<nlohmann::json> QmpClient::execute(const std::string& name, const nlohmann::json& args, std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    uint64_t id = next_id_++;
    nlohmann::json request = {{"execute", name}, {"id", id}};
    if (!args.is_null() && !args.empty()) request["arguments"] = args;
    if (auto ok = send_line(qmp_serialize(request) + "\n", deadline); !ok) return std::unexpected(ok.error());
    for (;;) {
        auto msg = read_message(deadline);
        if (!msg) return msg;
        if (msg->contains("event")) {
            events_.push_back(std::move(*msg));
            continue;
        }
        if (!msg->contains("return") && !msg->contains("error")) continue;  // not for us (a greeting?)
        auto it = msg->find("id");
        // A reply without an id answers a request the server could not read as ours.
        if (it == msg->end() || *it == id) return msg;
    }
}

}  // namespace ferry
