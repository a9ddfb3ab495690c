#include "monitor/session.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace ferry {

namespace {
constexpr size_t kReadChunk = 16 * 1024;
}

QmpSession::QmpSession(Fd fd, size_t max_output) : fd_(std::move(fd)), max_output_(max_output) {}

void QmpSession::kill(std::string why) {
    if (dead_) return;
    dead_ = true;
    why_ = std::move(why);
    out_.clear();
    out_off_ = 0;
}

void QmpSession::send(const nlohmann::json& message) {
    if (dead_) return;
    std::string line = qmp_serialize(message);
    line += "\r\n";
    if (out_.size() - out_off_ + line.size() > max_output_) {
        kill(fmt::format("its output buffer is full ({} bytes unread)", out_.size() - out_off_));
        return;
    }
    if (out_off_ == out_.size()) {
        out_.clear();
        out_off_ = 0;
    }
    out_ += line;
    flush();
}

void QmpSession::flush() {
    while (!dead_ && out_off_ < out_.size()) {
        ssize_t n = ::send(fd_.get(), out_.data() + out_off_, out_.size() - out_off_, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n <= 0) {
            kill(fmt::format("write failed: {}", std::strerror(errno)));
            return;
        }
        out_off_ += static_cast<size_t>(n);
    }
    // Compact once the front of the buffer is mostly written.
    if (out_off_ > 0 && out_off_ * 2 >= out_.size()) {
        out_.erase(0, out_off_);
        out_off_ = 0;
    }
}

void QmpSession::on_readable(const CommandTable& commands) {
    if (dead_) return;
    char buf[kReadChunk];
    ssize_t n = ::recv(fd_.get(), buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        kill(fmt::format("read failed: {}", std::strerror(errno)));
        return;
    }
    if (n == 0) {
        // The client is gone (or half-closed): what is queued goes out if the socket
        // takes it now; a request cut off mid-way is dropped.
        flush();
        kill("it disconnected");
        return;
    }
    std::vector<JsonStream::Item> items;
    auto status = in_.feed(std::string_view(buf, static_cast<size_t>(n)), items);
    for (const auto& item : items) {
        if (dead_) return;
        handle(item, commands);
    }
    if (status == JsonStream::Status::TooLong)
        kill(fmt::format("it sent more than {} bytes without completing a JSON object", JsonStream::kDefaultMaxText));
}

void QmpSession::handle(const JsonStream::Item& item, const CommandTable& commands) {
    if (item.too_deep) {
        send(qmp_reply(qmp_error("JSON nesting depth limit exceeded"), nullptr));
        return;
    }
    auto request = qmp_parse(item.text);
    if (!request) {
        send(qmp_reply(std::unexpected(request.error()), nullptr));
        return;
    }
    send(commands.dispatch(*request, call_));
}

}  // namespace ferry
