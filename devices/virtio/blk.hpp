// virtio-blk (device type 2) on a raw image file, I/O through io_uring (liburing).
//
// Request (virtio 1.x §5.2.6), parsed as byte streams over the chain's readable and
// writable buffers, whatever the descriptor layout:
//   readable:  struct {u32 type; u32 reserved; u64 sector;} then, for OUT, the data
//   writable:  for IN / GET_ID the data, then one status byte (0 OK, 1 IOERR, 2 UNSUPP)
// Types: IN 0, OUT 1, FLUSH 4, GET_ID 8. Data lengths are multiples of 512 and
// [sector*512, +len) must lie inside the image (checked arithmetic); a read-only disk
// answers OUT with IOERR. Malformed chains complete with used length 0.
//
// Threads: a worker thread owns the io_uring and serves the queue when notified
// (eventfd). Each batch pops every available chain, submits them, waits for all
// their completions and puts them on the used ring under `work_mu_`, so drain() and
// reset() (which take the same lock) see no request in flight.
// Config space: u64 capacity (512-byte sectors) at offset 0.
#pragma once

#include <liburing.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "base/fd.hpp"
#include "devices/virtio/device.hpp"

namespace ferry::virtio {

inline constexpr uint32_t kBlkTIn = 0, kBlkTOut = 1, kBlkTFlush = 4, kBlkTGetId = 8;
inline constexpr uint8_t kBlkSOk = 0, kBlkSIoErr = 1, kBlkSUnsupp = 2;
inline constexpr uint64_t kBlkFRo = 1ull << 5, kBlkFFlush = 1ull << 9;
inline constexpr uint16_t kBlkQueueSize = 256;

struct DiskSpec {
    std::string path;
    bool readonly = false;
};

class Blk : public VirtioDevice {
public:
    // Opens the image (O_RDWR, or O_RDONLY when read-only) and starts the worker.
    static Result<std::shared_ptr<Blk>> open(std::string id, const DiskSpec& spec);
    ~Blk() override;

    std::string id() const override { return id_; }
    uint32_t device_type() const override { return 2; }
    uint64_t features() const override;
    uint16_t num_queues() const override { return 1; }
    uint16_t queue_max_size() const override { return kBlkQueueSize; }
    void read_config(uint64_t offset, std::span<uint8_t> data) const override;
    void write_config(uint64_t, std::span<const uint8_t>) override {}
    void activate(DeviceContext ctx) override;
    void notify(uint16_t queue) override;
    void reset() override;
    void drain() override;
    int notify_fd(uint16_t) const override { return notify_.get(); }
    void save_state(StateWriter& w) const override { w.put_struct(state()); }
    Result<void> restore_state(StateReader& r) override;

    uint64_t capacity_sectors() const { return capacity_; }
    bool readonly() const { return readonly_; }

    // Plain device state, for save/restore: the destination checks that it opened
    // an image of the same size and mode.
    struct State {
        uint64_t capacity = 0;
        uint32_t readonly = 0;
        uint32_t reserved = 0;
    };
    State state() const { return State{capacity_, readonly_ ? 1u : 0u, 0}; }
    Result<void> check_state(const State& s) const;

private:
    Blk(std::string id, Fd file, uint64_t capacity, bool readonly);
    struct Request;
    void run();
    void process_locked();
    bool submit_locked();
    bool prep_locked(Request& rq, uint64_t i);
    bool retry_locked(Request& rq, int res);
    void warn_io_error(const std::string& what);
    void complete_locked(Queue& q, const Request& rq);

    std::string id_;
    Fd file_;
    uint64_t capacity_;
    bool readonly_;
    io_uring ring_{};
    bool ring_ok_ = false;
    Fd notify_, stop_;
    std::mutex work_mu_;
    bool active_ = false;  // guarded by work_mu_
    DeviceContext ctx_;    // guarded by work_mu_
    bool broken_ = false;  // queue unusable until reset
    uint64_t io_errors_ = 0, logged_io_errors_ = 0;  // host I/O errors (guarded by work_mu_)
    std::chrono::steady_clock::time_point last_io_warn_{};
    std::thread worker_;
};

}  // namespace ferry::virtio
