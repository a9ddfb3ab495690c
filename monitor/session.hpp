// QmpSession: one connected QMP client. It owns the client's socket (non-blocking),
// frames its input with a JsonStream, keeps its negotiation state, and buffers its
// output: replies and events are queued and written as the socket accepts them, so
// a client that does not read never blocks the loop. Limits, for untrusted clients:
//   - input: a JSON text still incomplete after 64 KiB closes the session;
//   - output: more than `max_output` bytes waiting closes the session (a client that
//     stopped reading must not grow ferry's memory without bound);
//   - fairness: one read of at most 16 KiB per wake-up, so a flooding client cannot
//     starve the others.
#pragma once

#include <cstddef>
#include <string>

#include <nlohmann/json.hpp>

#include "base/fd.hpp"
#include "monitor/dispatcher.hpp"
#include "monitor/json_stream.hpp"

namespace ferry {

class QmpSession {
public:
    QmpSession(Fd fd, size_t max_output);
    QmpSession(const QmpSession&) = delete;
    QmpSession& operator=(const QmpSession&) = delete;

    int fd() const { return fd_.get(); }
    bool command_mode() const { return call_.command_mode; }
    // Set once the session must be closed; `why` says why (for the log).
    bool dead() const { return dead_; }
    const std::string& why() const { return why_; }
    bool wants_write() const { return out_off_ < out_.size(); }

    // One read; dispatches every complete request through `commands`.
    void on_readable(const CommandTable& commands);
    // Writes what the socket takes now.
    void flush();
    // Queues one message (a line); kills the session when its output overflows.
    void send(const nlohmann::json& message);
    void kill(std::string why);

private:
    void handle(const JsonStream::Item& item, const CommandTable& commands);

    Fd fd_;
    size_t max_output_;
    JsonStream in_;
    std::string out_;
    size_t out_off_ = 0;
    CallContext call_;
    bool dead_ = false;
    std::string why_;
};

}  // namespace ferry
