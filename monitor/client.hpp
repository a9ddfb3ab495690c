// QmpClient: a small blocking QMP client for ferry's own tools (`ferry qmp`, and
// `ferry migrate` later): connect to the UNIX socket, read the greeting, negotiate,
// then execute commands one at a time, each with a deadline. Events that arrive
// while it waits for a reply are kept, in order, in events().
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "monitor/json_stream.hpp"

namespace ferry {

class QmpClient {
public:
    // Only connects: an error here means nothing serves `path` (missing file, refused).
    static Result<QmpClient> connect(const std::string& path);
    // Reads the greeting and sends qmp_capabilities; returns the greeting.
    Result<nlohmann::json> handshake(std::chrono::milliseconds timeout);
    // Sends {"execute": name, "arguments": args, "id": N} and returns the reply object
    // with that id ({"return": ...} or {"error": {...}}).
    Result<nlohmann::json> execute(const std::string& name, const nlohmann::json& args, std::chrono::milliseconds timeout);

    const std::vector<nlohmann::json>& events() const { return events_; }
    // Reads what the server still sends until it closes the connection (or the
    // timeout), keeping the events; for a server about to exit.
    void drain_events(std::chrono::milliseconds timeout);

private:
    explicit QmpClient(Fd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)), stream_(16u << 20) {}
    Result<void> send_line(const std::string& line, std::chrono::steady_clock::time_point deadline);
    Result<nlohmann::json> read_message(std::chrono::steady_clock::time_point deadline);

    Fd fd_;
    std::string path_;
    JsonStream stream_;
    std::vector<JsonStream::Item> ready_;
    size_t next_ = 0;
    uint64_t next_id_ = 1;
    std::vector<nlohmann::json> events_;
};

}  // namespace ferry
