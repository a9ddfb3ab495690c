// virtio-net (device type 1) on a host tap device (devices/tap.hpp).
//
// Queues: 0 = receive (device -> driver), 1 = transmit. Features offered: MAC, STATUS
// (link always up), INDIRECT_DESC; no offloads, no mergeable buffers, so every frame
// sits in one chain behind the 12-byte virtio_net_hdr (virtio 1.x §5.1.6):
//   {u8 flags; u8 gso_type; u16 hdr_len; u16 gso_size; u16 csum_start; u16 csum_offset; u16 num_buffers}
// Config space: u8 mac[6] at 0, u16 status at 6 (1 = link up).
//
// Transmit: a chain's readable bytes are the header then the frame. The header is not
// passed on (nothing was negotiated that could make it non-zero): the tap gets a zero
// header and the frame, with one writev straight from guest memory. Frames shorter
// than an Ethernet header or longer than kMaxFrame, and chains with writable buffers
// only, are dropped (completed, counted).
// Receive: a frame is read from the tap into a buffer of ours (so its length is known
// before a chain is taken), then copied behind a zero header with num_buffers = 1 into
// the next receive chain's writable buffers. No chain available: the frame waits and
// the tap is not read until the driver adds buffers. A chain too small for it: the
// frame is dropped and the chain completed with length 0.
//
// Announce (devices/virtio/announce.hpp): announce() starts a schedule of RARP frames
// from the card's MAC, written to the tap by the worker on a timerfd; a new call
// replaces a schedule in progress. Sent whatever the driver's state (it is the host
// telling the network where the MAC is, as QEMU does).
//
// Threads: one worker owns the tap's data path; it polls the tap (when a frame can be
// delivered), a notification eventfd (both queues, also KVM's ioeventfd), the announce
// timerfd and a stop eventfd, and does all queue work under `work_mu_`, which drain()
// and reset() take too, so neither sees a request half done.
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "devices/tap.hpp"
#include "devices/virtio/announce.hpp"
#include "devices/virtio/device.hpp"

namespace ferry::virtio {

inline constexpr uint64_t kNetFMac = 1ull << 5, kNetFStatus = 1ull << 16;
inline constexpr uint16_t kNetQueueSize = 256;
inline constexpr uint16_t kNetRxQueue = 0, kNetTxQueue = 1;
inline constexpr size_t kMaxFrame = 65535 + 14;  // what a tap may hand over (IP max + Ethernet)

struct NetSpec {
    std::string tap;
    MacAddress mac{};  // 52:54:00:12:34:56 + index unless given
    bool mac_given = false;
};
std::string format_mac(const MacAddress& mac);

class Net : public VirtioDevice {
public:
    // Attaches to the tap and starts the worker.
    static Result<std::shared_ptr<Net>> open(std::string id, const NetSpec& spec);
    // On a tap the caller made (Tap::adopt), without the worker: the caller does what
    // the worker would, synchronously, with service(). For the fuzzer
    // (tests/fuzz/fuzz_net.cpp): no thread per input, every run deterministic.
    static Result<std::shared_ptr<Net>> open_unthreaded(std::string id, Tap tap, const MacAddress& mac);
    // One wakeup of the worker on a notification (of either queue): transmit, then
    // receive (a waiting frame is retried). Only on a Net from open_unthreaded.
    void service();
    ~Net() override;

    std::string id() const override { return id_; }
    uint32_t device_type() const override { return 1; }
    uint64_t features() const override { return kFRingIndirectDesc | kNetFMac | kNetFStatus; }
    uint16_t num_queues() const override { return 2; }
    uint16_t queue_max_size() const override { return kNetQueueSize; }
    void read_config(uint64_t offset, std::span<uint8_t> data) const override;
    void write_config(uint64_t, std::span<const uint8_t>) override {}
    void activate(DeviceContext ctx) override;
    void notify(uint16_t queue) override;
    void reset() override;
    void drain() override;
    void resume() override;
    int notify_fd(uint16_t) const override { return notify_.get(); }

    // Migration: the MAC the guest saw; the destination must present the same one.
    struct State {
        MacAddress mac{};
        uint16_t reserved = 0;
    };
    void save_state(StateWriter& w) const override;
    Result<void> restore_state(StateReader& r) override;

    // Frames dropped so far (malformed, too big for the chain, tap write errors).
    struct Counters {
        uint64_t tx_frames = 0, rx_frames = 0, tx_dropped = 0, rx_dropped = 0;
        uint64_t announced = 0;  // RARP frames written to the tap
    };
    Counters counters() const;
    const MacAddress& mac() const { return mac_; }

    // Starts (or restarts) a self-announcement; `p` passed check_announce().
    void announce(const AnnounceParams& p);

private:
    Net(std::string id, Tap tap, const MacAddress& mac);
    void run();
    bool process_tx_locked();  // true: more is left (the worker comes back)
    void process_rx_locked();
    bool read_frame_locked();  // true: a frame is pending
    void announce_step_locked();
    void arm_announce_locked(uint64_t ms);

    std::string id_;
    Tap tap_;
    MacAddress mac_;
    Fd notify_, stop_, announce_timer_;
    mutable std::mutex work_mu_;
    bool active_ = false;     // guarded by work_mu_
    DeviceContext ctx_;       // guarded by work_mu_
    bool broken_ = false;     // queue unusable until reset
    bool rx_blocked_ = false;  // no receive chain: wait for a notification
    bool held_ = false;        // drained: no frame is received until resume() or activate()
    std::vector<uint8_t> frame_;  // a frame read from the tap, not yet delivered
    size_t frame_len_ = 0;        // 0: none pending
    Counters counters_;           // guarded by work_mu_
    AnnounceParams announce_;     // guarded by work_mu_: the schedule in progress
    uint64_t announce_left_ = 0;  // frames still to send
    std::thread worker_;
};

}  // namespace ferry::virtio
