#include "devices/virtio/queue.hpp"

#include <fmt/format.h>

#include <atomic>

namespace ferry::virtio {

namespace {

struct RawDesc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};
static_assert(sizeof(RawDesc) == 16);

Error bad(std::string what) { return Error{Domain::Device, 0, std::move(what)}; }

}  // namespace

Result<void> Queue::validate(const QueueState& s, uint16_t max_size, const GuestMemory& mem) {
    if (s.ready > 1) return fail(Domain::Device, "virtqueue: ready is not 0 or 1");
    if (!s.ready) return {};
    if (s.size == 0 || s.size > max_size || (s.size & (s.size - 1)))
        return fail(Domain::Device, fmt::format("virtqueue: size {} is not a power of two in 1..{}", s.size, max_size));
    if ((s.desc & 15) || (s.avail & 1) || (s.used & 3))
        return fail(Domain::Device, fmt::format("virtqueue: misaligned rings desc={:#x} avail={:#x} used={:#x}", s.desc, s.avail, s.used));
    const uint64_t n = s.size;
    struct Part {
        uint64_t gpa, len;
        const char* name;
    };
    for (Part p : {Part{s.desc, 16 * n, "descriptor table"}, Part{s.avail, 6 + 2 * n, "avail ring"},
                   Part{s.used, 6 + 8 * n, "used ring"}}) {
        if (auto sl = mem.slice(Gpa(p.gpa), p.len); !sl)
            return fail(Domain::Device, fmt::format("virtqueue: {} at {:#x} len {:#x} is outside guest RAM", p.name, p.gpa, p.len));
    }
    return {};
}

Result<void> Queue::set_ready(const GuestMemory& mem, bool ready) {
    QueueState s = s_;
    s.ready = ready ? 1 : 0;
    // A queue taken out of service loses its place in the rings (as a ring reset does):
    // enabled again, it starts from index 0, and a saved not-ready queue carries no
    // indices (restore() insists; fuzz_mmio found a guest that left some behind).
    if (!ready) s.last_avail_idx = s.used_idx = 0;
    if (auto ok = validate(s, max_size_, mem); !ok) return ok;
    s_ = s;
    return {};
}

Result<void> Queue::check_restore(const QueueState& s, const GuestMemory& mem) const {
    if (auto ok = validate(s, max_size_, mem); !ok) return ok;
    if (!s.ready && (s.last_avail_idx || s.used_idx)) return fail(Domain::Device, "virtqueue: indices on a queue that is not ready");
    return {};
}

Result<void> Queue::restore(const QueueState& s, const GuestMemory& mem) {
    if (auto ok = check_restore(s, mem); !ok) return ok;
    s_ = s;
    return {};
}

Result<void> Queue::walk(const GuestMemory& mem, Chain& c) const {
    const uint16_t size = s_.size;
    uint16_t idx = c.head;
    bool seen_writable = false;
    auto add = [&](const RawDesc& d) -> Result<void> {
        bool w = d.flags & kDescFWrite;
        if (!w && seen_writable) return std::unexpected(bad("device-readable descriptor after a device-writable one"));
        seen_writable |= w;
        if (!mem.slice(Gpa(d.addr), d.len))
            return std::unexpected(bad(fmt::format("buffer {:#x} len {:#x} is outside guest RAM", d.addr, d.len)));
        uint32_t& total = w ? c.writable : c.readable;
        if (__builtin_add_overflow(total, d.len, &total)) return std::unexpected(bad("chain length overflows 32 bits"));
        c.descs.push_back(Descriptor{Gpa(d.addr), d.len, w});
        return {};
    };
    for (uint32_t ttl = size;; --ttl) {
        if (ttl == 0) return std::unexpected(bad("descriptor chain longer than the queue (loop?)"));
        if (idx >= size) return std::unexpected(bad(fmt::format("descriptor index {} >= queue size {}", idx, size)));
        auto d = mem.read_obj<RawDesc>(Gpa(s_.desc + 16ull * idx));
        if (!d) return std::unexpected(d.error());
        if (d->flags & kDescFIndirect) {
            if (!indirect_) return std::unexpected(bad("indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC"));
            if (d->flags & kDescFNext) return std::unexpected(bad("indirect descriptor with NEXT"));
            if (d->len == 0 || d->len % 16 || d->len / 16 > kMaxQueueSize)
                return std::unexpected(bad(fmt::format("indirect table length {:#x}", d->len)));
            const uint32_t n = d->len / 16;
            auto table = mem.slice(Gpa(d->addr), d->len);
            if (!table) return std::unexpected(bad(fmt::format("indirect table {:#x} len {:#x} is outside guest RAM", d->addr, d->len)));
            uint32_t j = 0;
            for (uint32_t ittl = n;; --ittl) {
                if (ittl == 0) return std::unexpected(bad("indirect chain longer than its table (loop?)"));
                if (j >= n) return std::unexpected(bad(fmt::format("indirect index {} >= table size {}", j, n)));
                auto e = mem.read_obj<RawDesc>(Gpa(d->addr + 16ull * j));
                if (!e) return std::unexpected(e.error());
                if (e->flags & kDescFIndirect) return std::unexpected(bad("nested indirect descriptor"));
                if (auto ok = add(*e); !ok) return ok;
                if (!(e->flags & kDescFNext)) return {};
                j = e->next;
            }
        }
        if (auto ok = add(*d); !ok) return ok;
        if (!(d->flags & kDescFNext)) return {};
        idx = d->next;
    }
}

Result<std::optional<Chain>> Queue::pop(const GuestMemory& mem) {
    if (!s_.ready) return std::optional<Chain>{};
    auto avail_idx = mem.read_obj<uint16_t>(Gpa(s_.avail + 2));
    if (!avail_idx) return std::unexpected(avail_idx.error());
    uint16_t pending = static_cast<uint16_t>(*avail_idx - s_.last_avail_idx);
    if (pending == 0) return std::optional<Chain>{};
    if (pending > s_.size)
        return fail(Domain::Device, fmt::format("virtqueue: avail idx {} is {} ahead of {} (size {})", *avail_idx, pending,
                                                s_.last_avail_idx, s_.size));
    std::atomic_thread_fence(std::memory_order_acquire);  // ring entries after the index
    auto head = mem.read_obj<uint16_t>(Gpa(s_.avail + 4 + 2ull * (s_.last_avail_idx % s_.size)));
    if (!head) return std::unexpected(head.error());
    s_.last_avail_idx++;
    Chain c;
    c.head = *head;
    if (auto ok = walk(mem, c); !ok) {
        c.error = ok.error();
        c.descs.clear();
        c.readable = c.writable = 0;
    }
    return std::optional<Chain>(std::move(c));
}

Result<void> Queue::add_used(const GuestMemory& mem, uint16_t head, uint32_t len, const DirtyFn& dirty) {
    if (!s_.ready) return fail(Domain::Device, "virtqueue: add_used on a queue that is not ready");
    struct {
        uint32_t id, len;
    } elem{head, len};
    const Gpa at = used_elem_gpa(s_.used_idx % s_.size);
    if (auto ok = mem.write_obj(at, elem); !ok) return ok;
    std::atomic_thread_fence(std::memory_order_release);  // element before the index
    s_.used_idx++;
    if (auto ok = mem.write_obj<uint16_t>(Gpa(s_.used + 2), s_.used_idx); !ok) return ok;
    if (dirty) {
        dirty(at, sizeof(elem));
        dirty(Gpa(s_.used + 2), 2);
    }
    return {};
}

}  // namespace ferry::virtio
