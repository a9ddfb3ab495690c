// fuzz_virtqueue: the split-virtqueue parser (devices/virtio/queue.*) against
// hostile rings, on the fake guest RAM of fake_ram.hpp (two regions and a hole).
// Input layout (short inputs are zero-filled):
//
//   u8  flags      bit0 INDIRECT negotiated, bit1 restore() a QueueState from the
//                  input instead of the driver's register writes, bit2 after the
//                  ring drains, advance the avail index once more (wrap-around)
//   u8  qsize      < 16: queue size 1 << qsize; else the size itself (invalid
//                  sizes must be refused by the validator)
//   u16 avail_idx  the driver's avail index
//   [QueueState]   32 raw bytes, only with flags bit1 (size, ready, last_avail_idx,
//                  used_idx, desc, avail, used)
//   descriptor table  16 x size bytes at the queue's desc (kDesc unless restored)
//   avail ring        2 x size bytes at the queue's avail + 4 (kAvail unless restored)
//   the rest          at kData: indirect tables and buffers
//
// Then pop() until the ring is empty or broken, checking each chain's promises
// (every buffer inside RAM, totals right, readable before writable), and complete
// each one with add_used(), which must not fail on a validated queue.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>

#include "devices/virtio/queue.hpp"
#include "tests/fuzz/fake_ram.hpp"
#include "tests/fuzz/fuzz_input.hpp"

using namespace ferry;
using namespace ferry::virtio;
using namespace ferry::fuzz;

namespace {

constexpr uint16_t kMaxSize = 1024;

void put(const GuestMemory& mem, uint64_t gpa, std::span<const uint8_t> bytes) {
    if (!bytes.empty() && !mem.write_bytes(Gpa(gpa), bytes)) __builtin_trap();
}

// What pop() promises about a chain.
void check_chain(const GuestMemory& mem, const Chain& c) {
    if (c.error) {
        if (!c.descs.empty() || c.readable || c.writable) __builtin_trap();
        return;
    }
    uint64_t readable = 0, writable = 0;
    bool seen_writable = false;
    for (const Descriptor& d : c.descs) {
        auto s = mem.slice(d.addr, d.len);
        if (!s) __builtin_trap();  // the parser let a buffer outside RAM through
        if (!d.writable && seen_writable) __builtin_trap();
        seen_writable |= d.writable;
        (d.writable ? writable : readable) += d.len;
        if (s->empty()) continue;
        // Touch both ends, as a device would (a guard page or ASan catches a bad span).
        volatile uint8_t sink = (*s)[0] ^ (*s)[s->size() - 1];
        (void)sink;
        if (d.writable) (*s)[s->size() - 1] = 0xa5;
    }
    if (readable != c.readable || writable != c.writable) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const GuestMemory& mem = fake_ram();
    clear_fake_ram();
    fuzz::FuzzInput in(data, size);
    const auto flags = in.take<uint8_t>();
    const auto qsize_sel = in.take<uint8_t>();
    const auto avail_idx = in.take<uint16_t>();
    const bool indirect = flags & 1, restore = flags & 2, wrap = flags & 4;
    const uint16_t qsize = qsize_sel < 16 ? static_cast<uint16_t>(1u << qsize_sel) : qsize_sel;

    Queue q(kMaxSize);
    q.set_indirect(indirect);
    if (restore) {
        auto st = in.take<QueueState>();
        if (!q.restore(st, mem)) return 0;
    } else {
        q.set_size(qsize);
        q.set_desc(kDesc);
        q.set_avail(kAvail);
        q.set_used(kUsed);
        if (!q.set_ready(mem, true)) return 0;
    }
    if (!q.ready()) return 0;  // a restored queue that is not ready: nothing to pop

    // Lay the rings out where the queue has them (validated: inside RAM).
    const QueueState& st = q.state();
    const uint64_t n = st.size;
    put(mem, st.desc, in.take_bytes(16 * n));
    put(mem, st.avail + 4, in.take_bytes(2 * n));
    put(mem, kData, in.take_bytes(kRegionSize - kData));
    if (!mem.write_obj<uint16_t>(Gpa(st.avail + 2), avail_idx)) __builtin_trap();

    bool wrapped = false;
    for (uint32_t i = 0; i < 4u * kMaxSize + 8; ++i) {
        auto c = q.pop(mem);
        if (!c) break;  // a broken ring (unreadable, or the index too far ahead)
        if (!*c) {
            if (!wrap || wrapped) break;
            wrapped = true;  // the driver offers a whole ring more
            uint16_t next = static_cast<uint16_t>(avail_idx + st.size);
            if (!mem.write_obj<uint16_t>(Gpa(st.avail + 2), next)) __builtin_trap();
            continue;
        }
        check_chain(mem, **c);
        uint32_t len = (*c)->error ? 0 : (*c)->writable;
        // The used ring was validated with the queue: completing must always work.
        if (!q.add_used(mem, (*c)->head, len)) __builtin_trap();
    }
    (void)q.set_ready(mem, false);
    return 0;
}
