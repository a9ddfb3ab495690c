// fuzz_net: virtio-net's data path (devices/virtio/net.cpp) between a hostile driver
// and the host's side of the tap. The device runs without its worker
// (Net::open_unthreaded; the harness calls service() where the worker would wake up)
// on one end of a non-blocking SOCK_SEQPACKET socketpair (Tap::adopt), which keeps
// frame boundaries as a tap does; the harness holds the other end, writes the input's
// frames into it as the tap would hand them over and reads back every frame the
// device transmits. Both queues live in the fake guest RAM of fake_ram.hpp:
//
//   receive (0)   desc table kDesc (0x1000), avail ring kAvail (0x2000), used kUsed (0x3000)
//   transmit (1)  desc table 0x5000, avail ring 0x6000, used ring 0x7000
//   buffers       from 0x8000 (descriptors may point anywhere, rings included)
//
// Input layout (short inputs are zero-filled):
//   u8  flags      bit0 INDIRECT negotiated, bit1 a dirty callback (every range it is
//                  told of must lie in RAM), bit2 activate as restored from a migration,
//                  bit3 after the first round offer both rings once more (avail idx +=
//                  size: the driver reuses its buffers) and run a second round
//   u8  rxq, txq   queue sizes: < 16: 1 << n, else n itself (above 256, or not a power
//                  of two, QueueReady is refused and the queue stays out of service)
//   u8  cfg        an offset for an 8-byte read of the configuration space
//   u16 rx_idx     the receive queue's avail index
//   u16 tx_idx     the transmit queue's avail index
//   rx desc table  16 x size bytes, then the rx avail ring 2 x size bytes (at avail + 4)
//   tx desc table  16 x size bytes, then the tx avail ring 2 x size bytes
//                  (nothing for a queue out of service)
//   u8  frames     how many frames the tap hands over (at most 32), each u16 len then
//                  len bytes: the 12-byte virtio_net_hdr and the Ethernet frame, as
//                  read from a tap (shorter than 12 + 14 bytes: dropped by the device)
//   the rest       at 0x8000: buffers and indirect tables
//
// A round: the frames go into the socket, then service() until nothing moves (at most
// 16 times), the transmitted frames read back after each. Checks beyond "no crash":
// every transmitted frame carries a zero header and 14 to kMaxFrame bytes, one per
// counted tx frame; each queue's used index moved by the chains the counters account
// for; the device's state saves and restores.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "devices/virtio/net.hpp"
#include "tests/fuzz/fake_ram.hpp"
#include "tests/fuzz/fuzz_input.hpp"

using namespace ferry;
using namespace ferry::virtio;
using namespace ferry::fuzz;

namespace {

constexpr uint64_t kTxDesc = 0x5000, kTxAvail = 0x6000, kTxUsed = 0x7000, kNetData = 0x8000;
constexpr size_t kMaxFrames = 32;
constexpr size_t kMinFrame = kVnetHdrSize + 14;

void put(const GuestMemory& mem, uint64_t gpa, std::span<const uint8_t> bytes) {
    if (!bytes.empty() && !mem.write_bytes(Gpa(gpa), bytes)) __builtin_trap();
}

Queue make_queue(const GuestMemory& mem, uint8_t sel, bool indirect, uint64_t desc, uint64_t avail, uint64_t used) {
    Queue q(kNetQueueSize);
    q.set_indirect(indirect);
    q.set_size(sel < 16 ? static_cast<uint16_t>(1u << sel) : sel);
    q.set_desc(desc);
    q.set_avail(avail);
    q.set_used(used);
    (void)q.set_ready(mem, true);  // refused: out of service, as the transport leaves it
    return q;
}

// The rings of a queue in service, from the input.
void lay_out(const GuestMemory& mem, const Queue& q, uint16_t avail_idx, FuzzInput& in) {
    if (!q.ready()) return;
    const QueueState& st = q.state();
    put(mem, st.desc, in.take_bytes(16ull * st.size));
    put(mem, st.avail + 4, in.take_bytes(2ull * st.size));
    if (!mem.write_obj<uint16_t>(Gpa(st.avail + 2), avail_idx)) __builtin_trap();
}

struct Host {
    int fd;
    uint64_t frames = 0;   // transmitted frames read back
    // Reads back everything the device wrote to the tap.
    void collect() {
        static uint8_t buf[kVnetHdrSize + kMaxFrame + 1];  // one frame at a time; kept (zeroing it per input would cost more)
        for (;;) {
            ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
            if (n < 0) return;
            if (static_cast<size_t>(n) < kMinFrame || static_cast<size_t>(n) > kVnetHdrSize + kMaxFrame) __builtin_trap();
            for (size_t i = 0; i < kVnetHdrSize; ++i)
                if (buf[i] != 0) __builtin_trap();  // nothing negotiated could make the header non-zero
            ++frames;
        }
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const GuestMemory& mem = fake_ram();
    clear_fake_ram();
    FuzzInput in(data, size);
    const auto flags = in.take<uint8_t>();
    const auto rx_sel = in.take<uint8_t>(), tx_sel = in.take<uint8_t>();
    const auto cfg = in.take<uint8_t>();
    const auto rx_idx = in.take<uint16_t>(), tx_idx = in.take<uint16_t>();
    const bool indirect = flags & 1, dirty = flags & 2, restored = flags & 4, again = flags & 8;

    std::vector<Queue> queues;
    queues.push_back(make_queue(mem, rx_sel, indirect, kDesc, kAvail, kUsed));
    queues.push_back(make_queue(mem, tx_sel, indirect, kTxDesc, kTxAvail, kTxUsed));
    lay_out(mem, queues[kNetRxQueue], rx_idx, in);
    lay_out(mem, queues[kNetTxQueue], tx_idx, in);

    std::vector<std::span<const uint8_t>> frames;
    const size_t nframes = in.take<uint8_t>() % (kMaxFrames + 1);
    for (size_t i = 0; i < nframes && in.left(); ++i) frames.push_back(in.take_bytes(in.take<uint16_t>()));
    put(mem, kNetData, in.take_bytes(kRegionSize - kNetData));

    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) __builtin_trap();
    Host host{sv[1]};
    auto net = Net::open_unthreaded("net0", Tap::adopt(Fd(sv[0]), "fuzz0"), MacAddress{0x52, 0x54, 0, 0x12, 0x34, 0x56});
    if (!net) __builtin_trap();
    Net& dev = **net;

    uint8_t config[8];
    dev.read_config(cfg, config);

    DeviceContext ctx;
    ctx.mem = &mem;
    ctx.queues = &queues;
    ctx.features = kFVersion1 | (indirect ? kFRingIndirectDesc : 0);
    ctx.signal = [](uint16_t q) {
        if (q != kNetRxQueue && q != kNetTxQueue) __builtin_trap();
    };
    if (dirty) {
        ctx.dirty = [&mem](Gpa gpa, uint64_t len) {
            if (!mem.slice(gpa, len)) __builtin_trap();  // the device wrote outside RAM?
        };
    }
    ctx.restored = restored;
    dev.activate(std::move(ctx));

    uint64_t injected = 0;
    auto round = [&] {
        for (auto f : frames) {
            if (::send(host.fd, f.data(), f.size(), MSG_DONTWAIT) < 0) break;  // the socket is full
            ++injected;
        }
        Net::Counters last{};
        for (int i = 0; i < 16; ++i) {
            dev.service();
            host.collect();
            Net::Counters c = dev.counters();
            if (i > 0 && c.tx_frames == last.tx_frames && c.tx_dropped == last.tx_dropped && c.rx_frames == last.rx_frames &&
                c.rx_dropped == last.rx_dropped)
                break;
            last = c;
        }
    };
    round();
    if (again) {
        for (uint16_t qi : {kNetRxQueue, kNetTxQueue}) {
            const QueueState& st = queues[qi].state();
            if (!queues[qi].ready()) continue;
            auto idx = mem.read_obj<uint16_t>(Gpa(st.avail + 2));  // the rings may have been overwritten
            if (idx) (void)mem.write_obj<uint16_t>(Gpa(st.avail + 2), static_cast<uint16_t>(*idx + st.size));
        }
        round();
    }

    const Net::Counters c = dev.counters();
    if (host.frames != c.tx_frames) __builtin_trap();
    // Every chain taken is completed once, and counted once (as sent or dropped).
    if (queues[kNetTxQueue].state().used_idx != static_cast<uint16_t>(c.tx_frames + c.tx_dropped)) __builtin_trap();
    const uint16_t rx_used = queues[kNetRxQueue].state().used_idx;
    if (rx_used < c.rx_frames || rx_used > c.rx_frames + c.rx_dropped) __builtin_trap();
    if (c.rx_frames + c.rx_dropped > injected) __builtin_trap();

    // The state a migration would carry must load again.
    StateWriter w;
    dev.save_state(w);
    StateReader r(w.bytes());
    if (!dev.restore_state(r)) __builtin_trap();
    dev.reset();
    dev.drain();
    ::close(sv[1]);
    return 0;
}
