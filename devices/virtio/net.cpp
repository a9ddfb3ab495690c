#include "devices/virtio/net.hpp"
#include "base/seccomp.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "base/log.hpp"
#include "base/privileges.hpp"

namespace ferry::virtio {

namespace {

constexpr size_t kEthHeader = 14;
constexpr int kBatch = 64;  // chains per queue per wakeup before looking at the other queue

void kick(const Fd& fd) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(fd.get(), &one, sizeof(one));
}

}  // namespace

std::string format_mac(const MacAddress& m) {
    return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]);
}

Result<std::shared_ptr<Net>> Net::open(std::string id, const NetSpec& spec) {
    auto tap = Tap::open(spec.tap);
    if (!tap) return std::unexpected(tap.error());
    std::shared_ptr<Net> n(new Net(std::move(id), std::move(*tap), spec.mac));
    if (!n->notify_.valid() || !n->stop_.valid()) return fail_errno(Domain::Device, "eventfd");
    if (!n->announce_timer_.valid()) return fail_errno(Domain::Device, "timerfd_create");
    n->worker_ = std::thread([p = n.get()] { p->run(); });
    return n;
}

Result<std::shared_ptr<Net>> Net::open_unthreaded(std::string id, Tap tap, const MacAddress& mac) {
    std::shared_ptr<Net> n(new Net(std::move(id), std::move(tap), mac));
    if (!n->notify_.valid() || !n->stop_.valid()) return fail_errno(Domain::Device, "eventfd");
    if (!n->announce_timer_.valid()) return fail_errno(Domain::Device, "timerfd_create");
    return n;
}

void Net::service() {
    std::lock_guard lock(work_mu_);
    rx_blocked_ = false;  // as the worker on a notification: maybe new receive buffers
    process_tx_locked();
    process_rx_locked();
}

Net::Net(std::string id, Tap tap, const MacAddress& mac)
    : id_(std::move(id)), tap_(std::move(tap)), mac_(mac), notify_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      stop_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      announce_timer_(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK)),
      frame_(kVnetHdrSize + kMaxFrame) {}

Net::~Net() {
    if (worker_.joinable()) {
        kick(stop_);
        worker_.join();
    }
}

void Net::read_config(uint64_t offset, std::span<uint8_t> data) const {
    uint8_t cfg[8] = {mac_[0], mac_[1], mac_[2], mac_[3], mac_[4], mac_[5], 1, 0};  // status: LINK_UP
    for (size_t i = 0; i < data.size(); ++i) data[i] = offset + i < sizeof(cfg) ? cfg[offset + i] : 0;
}

void Net::activate(DeviceContext ctx) {
    bool restored = ctx.restored;
    {
        std::lock_guard lock(work_mu_);
        ctx_ = std::move(ctx);
        active_ = true;
        broken_ = false;
        rx_blocked_ = false;
        held_ = false;
    }
    if (!restored) kick(notify_);  // the worker looks at the queues (buffers added before DRIVER_OK)
}

void Net::notify(uint16_t) { kick(notify_); }

void Net::reset() {
    std::lock_guard lock(work_mu_);
    active_ = false;
    ctx_ = DeviceContext{};
}

void Net::drain() {
    std::lock_guard lock(work_mu_);
    held_ = false;
    while (process_tx_locked()) {
    }
    // Frames the tap receives from now on wait in the tap (as QEMU's stopped VM leaves
    // them): one written into guest RAM after migration's last round would be lost and
    // would leave the saved used index ahead of the ring the destination gets.
    held_ = true;
}

void Net::resume() {
    {
        std::lock_guard lock(work_mu_);
        held_ = false;
    }
    kick(notify_);
}

Net::Counters Net::counters() const {
    std::lock_guard lock(work_mu_);
    return counters_;
}

void Net::announce(const AnnounceParams& p) {
    std::lock_guard lock(work_mu_);
    announce_ = p;
    announce_left_ = p.rounds;
    arm_announce_locked(0);
}

// Fires the timer after `ms` (0: at once).
void Net::arm_announce_locked(uint64_t ms) {
    itimerspec t{};
    t.it_value.tv_sec = static_cast<time_t>(ms / 1000);
    t.it_value.tv_nsec = static_cast<long>(ms % 1000 * 1000000 + (ms == 0 ? 1 : 0));  // all zero would disarm it
    if (::timerfd_settime(announce_timer_.get(), 0, &t, nullptr) != 0)
        logger("dev." + id_)->warn("announce: timerfd_settime: {}; no RARP frames sent", std::strerror(errno));
}

// Writes one RARP frame behind a zero header and arms the timer for the next.
void Net::announce_step_locked() {
    if (announce_left_ == 0) return;
    auto frame = rarp_frame(mac_);
    uint8_t hdr[kVnetHdrSize] = {};
    iovec iov[2] = {{hdr, sizeof(hdr)}, {frame.data(), frame.size()}};
    ssize_t n = ::writev(tap_.fd(), iov, 2);
    if (n == static_cast<ssize_t>(sizeof(hdr) + frame.size())) counters_.announced++;
    else logger("dev." + id_)->debug("announce: tap write: {}", n < 0 ? std::strerror(errno) : "short");
    if (--announce_left_ > 0) arm_announce_locked(announce_gap_ms(announce_, announce_.rounds - announce_left_));
}

void Net::save_state(StateWriter& w) const { w.put_struct(State{mac_, 0}); }

Result<void> Net::restore_state(StateReader& r) {
    State s;
    if (!r.get_struct(s)) return fail(Domain::Migration, fmt::format("{}: virtio-net state is malformed", id_));
    if (s.mac != mac_)
        return fail(Domain::Migration, fmt::format("{}: the guest's network card has MAC {}, this one {} (give this card the MAC {})", id_,
                                                   format_mac(s.mac), format_mac(mac_), format_mac(s.mac)));
    return {};
}

void Net::run() {
    auto log = logger("dev." + id_);
    // Started during setup, before the main thread gives up its capabilities: give up
    // this thread's own now (base/privileges.hpp).
    if (auto ok = privileges::drop_this_thread(); !ok) log->warn("{}", ok.error().message());
    if (auto ok = seccomp::confine_this_thread(seccomp::ThreadKind::NetWorker); !ok) log->error("{}", ok.error().message());
    for (;;) {
        bool want_rx;
        {
            std::lock_guard lock(work_mu_);
            want_rx = active_ && !broken_ && !rx_blocked_ && !held_;
        }
        pollfd fds[4] = {{stop_.get(), POLLIN, 0},
                         {notify_.get(), POLLIN, 0},
                         {tap_.fd(), static_cast<short>(want_rx ? POLLIN : 0), 0},
                         {announce_timer_.get(), POLLIN, 0}};
        int r = ::poll(fds, 4, -1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            log->error("poll: {}", std::strerror(errno));
            return;
        }
        if (fds[0].revents & POLLIN) return;
        if (fds[1].revents & POLLIN) {
            uint64_t v;
            [[maybe_unused]] ssize_t n = ::read(notify_.get(), &v, sizeof(v));
        }
        bool timer = false;
        if (fds[3].revents & POLLIN) {
            uint64_t expirations;
            timer = ::read(announce_timer_.get(), &expirations, sizeof(expirations)) == sizeof(expirations);
        }
        std::lock_guard lock(work_mu_);
        if (timer) announce_step_locked();
        if (fds[1].revents & POLLIN) rx_blocked_ = false;  // maybe new receive buffers
        process_tx_locked();
        process_rx_locked();
    }
}

// Sends every available transmit chain (up to kBatch a call; the worker comes back).
bool Net::process_tx_locked() {
    if (!active_ || broken_ || held_ || !ctx_.mem || !ctx_.queues || ctx_.queues->size() <= kNetTxQueue) return false;
    const GuestMemory& mem = *ctx_.mem;
    Queue& q = (*ctx_.queues)[kNetTxQueue];
    auto log = logger("dev." + id_);
    int sent = 0;
    bool more = false;
    for (;;) {
        if (sent == kBatch) {
            more = true;
            break;
        }
        auto popped = q.pop(mem);
        if (!popped) {
            log->debug("tx queue broken: {}", popped.error().message());
            broken_ = true;
            break;
        }
        if (!*popped) break;
        const Chain& c = **popped;
        ++sent;
        // The frame: the readable bytes after the header, gathered straight from guest RAM.
        static const uint8_t zero_hdr[kVnetHdrSize] = {};
        std::vector<iovec> iov{{const_cast<uint8_t*>(zero_hdr), kVnetHdrSize}};
        uint64_t skip = kVnetHdrSize, frame = 0;
        bool ok = !c.error && c.readable >= kVnetHdrSize + kEthHeader && c.readable - kVnetHdrSize <= kMaxFrame;
        for (const auto& d : c.descs) {
            if (!ok || d.writable) continue;
            uint64_t off = std::min<uint64_t>(skip, d.len);
            skip -= off;
            if (off == d.len) continue;
            auto s = mem.slice(Gpa(d.addr.raw() + off), d.len - off);  // checked by the queue
            if (!s) {
                ok = false;
                break;
            }
            iov.push_back(iovec{s->data(), s->size()});
            frame += s->size();
        }
        if (ok && iov.size() <= IOV_MAX) {
            ssize_t n = ::writev(tap_.fd(), iov.data(), static_cast<int>(iov.size()));
            if (n == static_cast<ssize_t>(kVnetHdrSize + frame)) {
                counters_.tx_frames++;
            } else {
                log->debug("tap write of {} bytes: {}", frame, n < 0 ? std::strerror(errno) : "short");
                counters_.tx_dropped++;
            }
        } else {
            log->debug("tx chain {}: {}", c.head, c.error ? c.error->message() : "not a frame");
            counters_.tx_dropped++;
        }
        if (auto done = q.add_used(mem, c.head, 0, ctx_.dirty); !done) {
            log->debug("tx used ring: {}", done.error().message());
            broken_ = true;
            break;
        }
    }
    if (sent && ctx_.signal) ctx_.signal(kNetTxQueue);
    if (more) kick(notify_);
    return more;
}

bool Net::read_frame_locked() {
    if (frame_len_) return true;
    ssize_t n = ::read(tap_.fd(), frame_.data(), frame_.size());
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR) logger("dev." + id_)->debug("tap read: {}", std::strerror(errno));
        return false;
    }
    if (static_cast<size_t>(n) < kVnetHdrSize + kEthHeader) {  // nothing a guest could use
        counters_.rx_dropped++;
        return false;
    }
    frame_len_ = static_cast<size_t>(n) - kVnetHdrSize;
    return true;
}

// Delivers pending and newly arrived frames while receive chains last.
void Net::process_rx_locked() {
    if (!active_ || broken_ || rx_blocked_ || held_ || !ctx_.mem || !ctx_.queues || ctx_.queues->empty()) return;
    const GuestMemory& mem = *ctx_.mem;
    Queue& q = (*ctx_.queues)[kNetRxQueue];
    auto log = logger("dev." + id_);
    int delivered = 0;
    bool more = false;
    while (read_frame_locked()) {
        if (delivered == kBatch) {
            more = true;
            break;
        }
        auto popped = q.pop(mem);
        if (!popped) {
            log->debug("rx queue broken: {}", popped.error().message());
            broken_ = true;
            break;
        }
        if (!*popped) {
            rx_blocked_ = true;  // the frame waits for a notification
            break;
        }
        const Chain& c = **popped;
        ++delivered;
        // Header (zero, num_buffers = 1) then the frame, across the writable buffers.
        uint8_t* src = frame_.data();
        std::memset(src, 0, kVnetHdrSize);
        src[10] = 1;
        const uint64_t total = kVnetHdrSize + frame_len_;
        uint32_t used = 0;
        if (!c.error && c.writable >= total) {
            uint64_t off = 0;
            for (const auto& d : c.descs) {
                if (!d.writable || off == total) continue;
                uint64_t n = std::min<uint64_t>(d.len, total - off);
                auto s = mem.slice(d.addr, n);  // checked by the queue
                if (!s) break;
                std::memcpy(s->data(), src + off, n);
                if (ctx_.dirty) ctx_.dirty(d.addr, n);
                off += n;
            }
            used = static_cast<uint32_t>(off);
            counters_.rx_frames++;
        } else {
            log->debug("rx chain {}: {}", c.head, c.error ? c.error->message() : fmt::format("{} bytes, frame needs {}", c.writable, total));
            counters_.rx_dropped++;
        }
        frame_len_ = 0;
        if (auto done = q.add_used(mem, c.head, used, ctx_.dirty); !done) {
            log->debug("rx used ring: {}", done.error().message());
            broken_ = true;
            break;
        }
    }
    if (delivered && ctx_.signal) ctx_.signal(kNetRxQueue);
    if (more) kick(notify_);
}

}  // namespace ferry::virtio
