// A small epoll loop for the main (I/O) thread: fds with callbacks, run until
// stop(). Callbacks run on the loop's thread; stop() may be called from them.
#pragma once

#include <cstdint>
#include <functional>
#include <map>

#include "base/error.hpp"
#include "base/fd.hpp"

namespace ferry {

class EventLoop {
public:
    using Callback = std::function<void(uint32_t events)>;

    static Result<EventLoop> create();
    // Watch `fd` (not owned) for `events` (EPOLLIN, ...); replaces an earlier watch.
    Result<void> watch(int fd, uint32_t events, Callback cb);
    void unwatch(int fd);
    // Runs until stop(); returns early with an error only if epoll itself fails.
    Result<void> run();
    void stop() { running_ = false; }

private:
    explicit EventLoop(Fd ep) : ep_(std::move(ep)) {}
    Fd ep_;
    std::map<int, Callback> callbacks_;
    bool running_ = false;
};

}  // namespace ferry
