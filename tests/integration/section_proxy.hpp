// A man in the middle for the migration connection, for the fault tests: it accepts
// the source, connects to the destination and passes the stream through section by
// section in both directions. A hook sees every section before it is forwarded and
// says what to do with it: forward it, drop it, cut both connections there (before it,
// or after half of its bytes went on), stall (stop forwarding in that direction
// without closing anything), or flip one byte of it on the way (the checksum left as
// it was, so the receiver must notice).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "migration/channel.hpp"
#include "migration/stream.hpp"

namespace ferry::test {

class SectionProxy {
public:
    enum class Dir { ToDestination, ToSource };
    enum class Action { Forward, Drop, Cut, CutMidway, Stall, Flip };
    using Hook = std::function<Action(Dir, const Section&)>;

    SectionProxy(uint16_t dst_port, Hook hook);
    ~SectionProxy();  // cuts whatever is still open and joins
    uint16_t port() const { return listener_->port(); }
    // Sections seen (forwarded or not), each direction.
    int seen(Dir d) const { return d == Dir::ToDestination ? to_dst_ : to_src_; }
    // Cuts both connections now.
    void cut();

private:
    void run();
    void pump(Channel& from, Channel& to, Dir d);
    static std::vector<uint8_t> framed(const Section& s);
    static bool send_flipped(Channel& to, const Section& s);
    static void send_half(Channel& to, const Section& s);

    uint16_t dst_port_;
    Hook hook_;
    std::unique_ptr<Listener> listener_;
    std::mutex mu_;
    std::unique_ptr<Channel> src_, dst_;
    std::atomic<int> to_dst_{0}, to_src_{0};
    std::atomic<bool> stop_{false};
    std::thread thread_, back_;
};

}  // namespace ferry::test
