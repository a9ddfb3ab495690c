// The source's return path: one reader thread that demultiplexes everything the
// destination sends back on the migration connection (sync-acks, ready, resumed,
// page requests, postcopy-done, errors) into state the migration thread waits on.
// The migration thread is the only sender; this thread only reads.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "memory/guest_memory.hpp"
#include "migration/channel.hpp"

namespace ferry {

class ReturnPath {
public:
    using Clock = std::chrono::steady_clock;
    ReturnPath(Channel& ch, const GuestMemory& mem) : ch_(ch), mem_(mem) {}
    ~ReturnPath() { join(); }
    void start();
    void join();  // after the channel is cancelled or closed

    // What came back so far.
    struct Events {
        uint32_t sync_acks = 0;
        bool ready = false;
        std::optional<Clock::time_point> resumed_at;
        bool postcopy_done = false;
        std::string error;  // the destination's reason, or why the path broke
        bool connection_broke = false;  // the error is the connection's (closed, reset, bad checksum)
        bool not_started = false;  // the destination said it never started the guest
    };
    // Waits until `pred(events)` holds, the path broke (error), or `timeout`; returns
    // the events then. nullopt on timeout.
    template <class Pred>
    std::optional<Events> wait(Pred pred, std::chrono::milliseconds timeout) {
        std::unique_lock lock(mu_);
        if (!cv_.wait_for(lock, timeout, [&] { return pred(ev_) || !ev_.error.empty(); })) return std::nullopt;
        return ev_;
    }
    Events events() const {
        std::lock_guard lock(mu_);
        return ev_;
    }
    // Takes the guest-physical addresses of the pages requested since the last call
    // (in request order); waits up to `timeout` for one when there is none.
    std::deque<uint64_t> take_requests(std::chrono::milliseconds timeout);
    bool has_requests() const {
        std::lock_guard lock(mu_);
        return !requests_.empty();
    }

private:
    void run();
    void broke(const std::string& why);

    Channel& ch_;
    const GuestMemory& mem_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    Events ev_;
    std::deque<uint64_t> requests_;
    std::thread thread_;
};

}  // namespace ferry
