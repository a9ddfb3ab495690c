#include "devices/virtio/blk.hpp"
#include "base/seccomp.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "base/log.hpp"
#include "base/privileges.hpp"

namespace ferry::virtio {

namespace {

constexpr unsigned kRingEntries = 256;
constexpr uint64_t kAsyncBytes = 64 * 1024;

// A byte-stream view over a list of guest buffers (all already checked by the queue).
struct Stream {
    std::vector<iovec> iov;
    uint64_t total = 0;
};

// Copies [off, off+out.size()) of the stream into out; false if out of range.
bool stream_read(const Stream& s, uint64_t off, std::span<uint8_t> out) {
    if (off > s.total || out.size() > s.total - off) return false;
    size_t done = 0;
    for (const auto& v : s.iov) {
        if (done == out.size()) break;
        if (off >= v.iov_len) {
            off -= v.iov_len;
            continue;
        }
        size_t n = std::min(v.iov_len - off, out.size() - done);
        std::memcpy(out.data() + done, static_cast<uint8_t*>(v.iov_base) + off, n);
        done += n;
        off = 0;
    }
    return true;
}

// The sub-stream [off, off+len).
Stream stream_cut(const Stream& s, uint64_t off, uint64_t len) {
    Stream r;
    for (const auto& v : s.iov) {
        if (len == 0) break;
        if (off >= v.iov_len) {
            off -= v.iov_len;
            continue;
        }
        size_t n = std::min<uint64_t>(v.iov_len - off, len);
        r.iov.push_back(iovec{static_cast<uint8_t*>(v.iov_base) + off, n});
        r.total += n;
        len -= n;
        off = 0;
    }
    return r;
}

}  // namespace

struct Blk::Request {
    uint16_t head = 0;
    uint8_t status = kBlkSOk;
    bool submitted = false;
    uint32_t type = 0;           // kBlkTIn, kBlkTOut or kBlkTFlush when submitted
    uint64_t pos = 0;            // byte offset in the image
    uint64_t expect = 0;         // bytes the I/O must transfer
    uint64_t done = 0;           // bytes transferred so far (a short transfer is resubmitted)
    unsigned retries = 0;
    Stream rest;                 // after a short transfer: the data past `done`
    uint32_t used_len = 0;       // bytes written to the guest
    Stream data;                 // the I/O buffers
    std::vector<std::pair<Gpa, uint64_t>> written;  // guest ranges written (dirty)
    Gpa status_gpa;
    bool has_status = false;
};

Result<std::shared_ptr<Blk>> Blk::open(std::string id, const DiskSpec& spec) {
    Fd f(::open(spec.path.c_str(), (spec.readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC));
    if (!f.valid()) return fail_config(ConfigItem::Disk, fmt::format("'{}'", spec.path), errno);
    struct stat st{};
    if (::fstat(f.get(), &st) != 0) return fail_config(ConfigItem::Disk, fmt::format("'{}'", spec.path), errno);
    uint64_t size = 0;
    if (S_ISREG(st.st_mode)) size = static_cast<uint64_t>(st.st_size);
    else if (S_ISBLK(st.st_mode)) {
        off_t end = ::lseek(f.get(), 0, SEEK_END);
        if (end < 0) return fail_config(ConfigItem::Disk, fmt::format("'{}'", spec.path), errno);
        size = static_cast<uint64_t>(end);
    } else {
        return fail_config(ConfigItem::Disk, fmt::format("'{}': not a regular file or block device", spec.path));
    }
    if (size < 512) return fail_config(ConfigItem::Disk, fmt::format("'{}': image smaller than one 512-byte sector", spec.path));
    std::shared_ptr<Blk> b(new Blk(std::move(id), std::move(f), size / 512, spec.readonly));
    if (!b->notify_.valid() || !b->stop_.valid()) return fail_errno(Domain::Device, "eventfd");
    if (int r = io_uring_queue_init(kRingEntries, &b->ring_, 0); r < 0)
        return fail_config(ConfigItem::Disk, fmt::format("'{}': io_uring_queue_init", spec.path), -r);
    b->ring_ok_ = true;
    b->worker_ = std::thread([p = b.get()] { p->run(); });
    return b;
}

Blk::Blk(std::string id, Fd file, uint64_t capacity, bool readonly)
    : id_(std::move(id)), file_(std::move(file)), capacity_(capacity), readonly_(readonly),
      notify_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)), stop_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

Blk::~Blk() {
    if (worker_.joinable()) {
        uint64_t one = 1;
        [[maybe_unused]] ssize_t n = ::write(stop_.get(), &one, sizeof(one));
        worker_.join();
    }
    if (ring_ok_) io_uring_queue_exit(&ring_);
}

uint64_t Blk::features() const {
    return kFRingIndirectDesc | kBlkFFlush | (readonly_ ? kBlkFRo : 0);
}

void Blk::read_config(uint64_t offset, std::span<uint8_t> data) const {
    uint8_t cfg[8];
    std::memcpy(cfg, &capacity_, 8);
    for (size_t i = 0; i < data.size(); ++i) data[i] = offset + i < sizeof(cfg) ? cfg[offset + i] : 0;
}

void Blk::activate(DeviceContext ctx) {
    std::lock_guard lock(work_mu_);
    bool restored = ctx.restored;
    ctx_ = std::move(ctx);
    active_ = true;
    broken_ = false;
    if (!restored) process_locked();  // anything made available before DRIVER_OK
}

void Blk::notify(uint16_t) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(notify_.get(), &one, sizeof(one));
}

void Blk::reset() {
    std::lock_guard lock(work_mu_);
    active_ = false;
    ctx_ = DeviceContext{};
}

void Blk::drain() {
    std::lock_guard lock(work_mu_);
    process_locked();
}

Result<void> Blk::check_state(const State& s) const {
    if (s.capacity != capacity_ || s.readonly != (readonly_ ? 1u : 0u))
        return fail(Domain::Migration, fmt::format("{}: the source's disk has {} sectors{}, this one {} sectors{}", id_, s.capacity,
                                                   s.readonly ? " (read-only)" : "", capacity_, readonly_ ? " (read-only)" : ""));
    return {};
}

Result<void> Blk::restore_state(StateReader& r) {
    State s;
    if (!r.get_struct(s)) return fail(Domain::Migration, fmt::format("{}: virtio-blk state is malformed", id_));
    return check_state(s);
}

void Blk::run() {
    // Started during setup, before the main thread gives up its capabilities: give up
    // this thread's own now (base/privileges.hpp).
    if (auto ok = privileges::drop_this_thread(); !ok) logger("dev." + id_)->warn("{}", ok.error().message());
    if (auto ok = seccomp::confine_this_thread(seccomp::ThreadKind::BlockWorker); !ok) logger("dev." + id_)->error("{}", ok.error().message());
    pollfd fds[2] = {{notify_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    for (;;) {
        int r = ::poll(fds, 2, -1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 || (fds[1].revents & POLLIN)) return;
        uint64_t v;
        [[maybe_unused]] ssize_t n = ::read(notify_.get(), &v, sizeof(v));
        std::lock_guard lock(work_mu_);
        process_locked();
    }
}

// Serves the queue until it is empty: pop, submit, wait for all, complete.
void Blk::process_locked() {
    if (!active_ || broken_ || !ctx_.mem || !ctx_.queues || ctx_.queues->empty()) return;
    const GuestMemory& mem = *ctx_.mem;
    Queue& q = (*ctx_.queues)[0];
    auto log = logger("dev." + id_);
    for (;;) {
        std::vector<Request> reqs;
        while (reqs.size() < kRingEntries) {
            auto popped = q.pop(mem);
            if (!popped) {
                log->debug("queue broken: {}", popped.error().message());
                broken_ = true;
                break;
            }
            if (!*popped) break;
            Chain& c = **popped;
            Request rq;
            rq.head = c.head;
            if (c.error) {
                log->debug("request {}: {}", c.head, c.error->message());
                reqs.push_back(std::move(rq));  // used len 0, no status
                continue;
            }
            Stream rd, wr;
            for (const auto& d : c.descs) {
                auto s = mem.slice(d.addr, d.len);  // checked by the queue; cannot fail
                if (!s) continue;
                (d.writable ? wr : rd).iov.push_back(iovec{s->data(), s->size()});
                (d.writable ? wr : rd).total += d.len;
            }
            struct {
                uint32_t type, reserved;
                uint64_t sector;
            } hdr{};
            if (!stream_read(rd, 0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&hdr), sizeof(hdr))) || wr.total < 1) {
                log->debug("request {}: no header or no status byte", c.head);
                reqs.push_back(std::move(rq));
                continue;
            }
            // The status byte is the last writable byte.
            {
                uint64_t off = wr.total - 1;
                for (const auto& d : c.descs) {
                    if (!d.writable) continue;
                    if (off < d.len) {
                        rq.status_gpa = Gpa(d.addr.raw() + off);
                        break;
                    }
                    off -= d.len;
                }
                rq.has_status = true;
                rq.used_len = 1;
            }
            auto range_ok = [&](uint64_t len) {
                uint64_t end;
                return len % 512 == 0 && !__builtin_add_overflow(hdr.sector, len / 512, &end) && end <= capacity_;
            };
            switch (hdr.type) {
                case kBlkTIn: {
                    rq.data = stream_cut(wr, 0, wr.total - 1);
                    if (!range_ok(rq.data.total)) {
                        rq.status = kBlkSIoErr;
                        break;
                    }
                    rq.expect = rq.data.total;
                    uint64_t off = 0;
                    for (const auto& d : c.descs) {
                        if (!d.writable) continue;
                        uint64_t n = std::min<uint64_t>(d.len, rq.data.total - std::min(off, rq.data.total));
                        if (n) rq.written.emplace_back(d.addr, n);
                        off += d.len;
                    }
                    rq.used_len = static_cast<uint32_t>(rq.data.total + 1);
                    break;
                }
                case kBlkTOut:
                    rq.data = stream_cut(rd, sizeof(hdr), rd.total - sizeof(hdr));
                    if (readonly_ || !range_ok(rq.data.total)) {
                        rq.status = kBlkSIoErr;
                        rq.data = {};
                    }
                    rq.expect = rq.data.total;
                    break;
                case kBlkTFlush: break;
                case kBlkTGetId: {
                    char id[20] = {};
                    std::snprintf(id, sizeof(id), "ferry-%s", id_.c_str());
                    Stream out = stream_cut(wr, 0, std::min<uint64_t>(wr.total - 1, sizeof(id)));
                    uint64_t off = 0;
                    for (const auto& v : out.iov) {
                        std::memcpy(v.iov_base, id + off, v.iov_len);
                        off += v.iov_len;
                    }
                    uint64_t left = out.total;
                    for (const auto& d : c.descs) {
                        if (!d.writable || left == 0) continue;
                        uint64_t n = std::min<uint64_t>(d.len, left);
                        rq.written.emplace_back(d.addr, n);
                        left -= n;
                    }
                    rq.used_len = static_cast<uint32_t>(out.total + 1);
                    break;
                }
                default: rq.status = kBlkSUnsupp; break;
            }
            rq.submitted = rq.status == kBlkSOk && (hdr.type == kBlkTIn || hdr.type == kBlkTOut || hdr.type == kBlkTFlush);
            if (rq.submitted && rq.expect == 0 && hdr.type != kBlkTFlush) rq.submitted = false;  // empty transfer
            if (rq.submitted) {
                rq.type = hdr.type;
                rq.pos = hdr.sector * 512;
                if (!prep_locked(rq, reqs.size())) {  // cannot happen: at most kRingEntries per batch
                    rq.submitted = false;
                    rq.status = kBlkSIoErr;
                }
            }
            reqs.push_back(std::move(rq));
        }
        if (reqs.empty()) return;
        // Requests that need no I/O complete at once, the others as their completions
        // arrive (a slow one does not hold back the rest; a polling driver sees each at
        // once); one interrupt for the batch (interrupts cost the guest more than a
        // late wake-up: ~20 us each where its ring 0 is emulated).
        size_t inflight = 0;
        for (auto& rq : reqs) {
            if (rq.submitted) ++inflight;
            else complete_locked(q, rq);
        }
        if (inflight && !submit_locked()) {
            broken_ = true;  // the SQEs may still be queued: never submit again before a reset
            return;
        }
        while (inflight > 0) {
            io_uring_cqe* cqe = nullptr;
            int r = io_uring_wait_cqe(&ring_, &cqe);
            if (r == -EINTR) continue;
            if (r < 0) {
                log->error("io_uring_wait_cqe: {}; the disk stops until the driver resets it", std::strerror(-r));
                broken_ = true;
                return;
            }
            unsigned head, seen = 0;
            bool resubmit = false;
            io_uring_for_each_cqe(&ring_, head, cqe) {
                ++seen;
                uint64_t i = io_uring_cqe_get_data64(cqe);
                if (i >= reqs.size() || !reqs[i].submitted) continue;
                Request& rq = reqs[i];
                if (retry_locked(rq, cqe->res)) {
                    if (prep_locked(rq, i)) {
                        resubmit = true;
                        continue;
                    }
                    rq.status = kBlkSIoErr;  // cannot happen: the batch's SQEs were all submitted
                }
                rq.submitted = false;
                inflight--;
                complete_locked(q, rq);
            }
            io_uring_cq_advance(&ring_, seen);
            if (resubmit && !submit_locked()) {
                broken_ = true;
                return;
            }
        }
        if (ctx_.signal) ctx_.signal(0);
        if (broken_) return;
    }
}

// Queues the SQE for what is left of rq (index i in the batch); false if the ring is full.
bool Blk::prep_locked(Request& rq, uint64_t i) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (!sqe) return false;
    if (rq.type == kBlkTFlush) {
        io_uring_prep_fsync(sqe, file_.get(), IORING_FSYNC_DATASYNC);
    } else {
        // The whole transfer the first time (no copy of the iovecs), what is left after.
        if (rq.done > 0) rq.rest = stream_cut(rq.data, rq.done, rq.expect - rq.done);
        const Stream& todo = rq.done > 0 ? rq.rest : rq.data;
        auto pos = static_cast<off_t>(rq.pos + rq.done);
        auto n = static_cast<unsigned>(todo.iov.size());
        if (rq.type == kBlkTIn) {
            io_uring_prep_readv(sqe, file_.get(), todo.iov.data(), n, pos);
        } else {
            io_uring_prep_writev(sqe, file_.get(), todo.iov.data(), n, pos);
            // A driver without FLUSH cannot ask for durability: write through.
            if (!(ctx_.features & kBlkFFlush)) sqe->rw_flags = RWF_DSYNC;
        }
        // Large transfers go to io_uring's workers, which copy in parallel (a
        // page-cache hit is otherwise copied inline, one request after another).
        if (rq.expect - rq.done >= kAsyncBytes) sqe->flags |= IOSQE_ASYNC;
    }
    io_uring_sqe_set_data64(sqe, i);
    return true;
}

// Accounts one completion of rq; true if the rest must be submitted again: a short
// read or write (the kernel may stop early, e.g. at a signal or under memory
// pressure) or an interrupted one. Anything else ends the request, an error as IOERR.
bool Blk::retry_locked(Request& rq, int res) {
    constexpr unsigned kMaxRetries = 16;
    bool again = false;
    if (res == -EINTR || res == -EAGAIN) {
        again = true;
    } else if (res < 0) {
        warn_io_error(fmt::format("{} at byte {}: {}; the guest gets an I/O error",
                                  rq.type == kBlkTIn ? "read" : rq.type == kBlkTOut ? "write" : "flush", rq.pos + rq.done,
                                  std::strerror(-res)));
        rq.status = kBlkSIoErr;
        return false;
    } else if (rq.type != kBlkTFlush) {
        rq.done += std::min<uint64_t>(static_cast<uint64_t>(res), rq.expect - rq.done);
        if (rq.done == rq.expect) return false;
        if (res == 0) {  // end of file: the image shrank under us
            warn_io_error(fmt::format("{} at byte {}: the image ends there; the guest gets an I/O error",
                                      rq.type == kBlkTIn ? "read" : "write", rq.pos + rq.done));
            rq.status = kBlkSIoErr;
            return false;
        }
        again = true;
    }
    if (again && ++rq.retries > kMaxRetries) {
        warn_io_error(fmt::format("request {} still incomplete after {} tries ({} of {} bytes); the guest gets an I/O error",
                                  rq.head, kMaxRetries, rq.done, rq.expect));
        rq.status = kBlkSIoErr;
        return false;
    }
    if (again) logger("dev." + id_)->debug("request {}: result {}, {} of {} bytes done: resubmitting", rq.head, res, rq.done, rq.expect);
    return again;
}

// A host I/O error is logged when it is the first, then at most once a second with
// how many were not logged (a guest retrying a failing disk would flood the log).
void Blk::warn_io_error(const std::string& what) {
    auto now = std::chrono::steady_clock::now();
    ++io_errors_;
    if (io_errors_ > 1 && now - last_io_warn_ < std::chrono::seconds(1)) return;
    uint64_t more = io_errors_ - logged_io_errors_ - 1;
    logger("dev." + id_)->warn("{}{}", what, more ? fmt::format(" ({} more since the last message)", more) : "");
    logged_io_errors_ = io_errors_;
    last_io_warn_ = now;
}

// Submits the queued SQEs, retrying while the kernel is short of resources.
bool Blk::submit_locked() {
    for (int tries = 0; tries < 1000; ++tries) {
        int r = io_uring_submit(&ring_);
        if (r >= 0) return true;
        if (r != -EINTR && r != -EAGAIN && r != -EBUSY) {
            logger("dev." + id_)->error("io_uring_submit: {}; the disk stops until the driver resets it", std::strerror(-r));
            return false;
        }
        ::usleep(100);
    }
    logger("dev." + id_)->error("io_uring_submit kept failing; the disk stops until the driver resets it");
    return false;
}

// Status byte, dirty ranges, used ring.
void Blk::complete_locked(Queue& q, const Request& rq) {
    const GuestMemory& mem = *ctx_.mem;
    if (rq.has_status) {
        (void)mem.write_obj<uint8_t>(rq.status_gpa, rq.status);
        if (ctx_.dirty) ctx_.dirty(rq.status_gpa, 1);
    }
    if (ctx_.dirty)
        for (auto [gpa, len] : rq.written) ctx_.dirty(gpa, len);
    if (broken_) return;
    if (auto ok = q.add_used(mem, rq.head, rq.has_status ? rq.used_len : 0, ctx_.dirty); !ok) {
        logger("dev." + id_)->debug("used ring: {}", ok.error().message());
        broken_ = true;
    }
}

}  // namespace ferry::virtio
