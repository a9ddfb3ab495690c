// fuzz_stream: the migration stream loader (migration/stream.*) and the state readers
// behind it, as the destination runs them, without KVM. Input layout:
//
//   u8 flags   bit0 fix checksums: before sending, the harness rewrites each
//              complete section's xxh3 so mutations get past the checksum;
//              bit1 (unused; kept so that older corpus files mean the same)
//              bit2 read the first section with expect_section(Header)
//   stream     raw bytes, as a source sends them (section frames, payloads, sums)
//
// The stream goes through a socketpair (a writer thread when it would not fit the
// socket buffer), so the loader reads it exactly as from a peer. Up to kMaxSections
// sections are read; each is handled as MigrationDestination::receive() does:
//   Header       decode_header, header_mismatch against this fake guest; a decoded
//                header must re-encode to the same bytes
//   RamBatch     verified whole, then decode_ram_batch + DirectPlacer into the fake
//                guest RAM (fake_ram.hpp: two regions, a hole)
//   Discard, PageRequest  decode_page_runs against the fake RAM; HeaderAck: decode_caps
//   VcpuState    u64 saved-at + VcpuState::load; VmState: VmState::load (both must
//                re-encode to what they read)
//   DeviceState  decode_record (devices/device_state.hpp), then load_record, as
//                Machine::restore_devices does once the id matched a device, into
//                the device of the record's kind: an 8250, an RTC, or a virtio-blk's
//                transport over a scratch image (skipped without io_uring), whose
//                restored live queue is then served once (drain)
//   Error        the reason string
// It must never crash, hang, leak, or write outside guest RAM.
#include <sys/socket.h>
#include <unistd.h>

#include <xxhash.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "base/state_io.hpp"
#include "devices/device_state.hpp"
#include "devices/rtc.hpp"
#include "devices/serial.hpp"
#include "devices/virtio/blk.hpp"
#include "devices/virtio/mmio.hpp"
#include "migration/stream.hpp"
#include "tests/fuzz/fake_ram.hpp"
#include "tests/fuzz/fuzz_input.hpp"
#include "vmm/cpu_state.hpp"

using namespace ferry;

namespace {

constexpr int kMaxSections = 64;
constexpr size_t kSocketFits = 64 * 1024;  // well under an AF_UNIX socket's buffer

const GuestMemory& ram() { return fuzz::fake_ram(); }

// One virtio-blk disk behind its transport, on guest RAM; built once.
struct Disk {
    std::shared_ptr<virtio::Blk> blk;
    std::unique_ptr<virtio::MmioTransport> transport;
};
Disk* disk() {
    static Disk* d = []() -> Disk* {
        char path[] = "/tmp/ferry-fuzz-disk-XXXXXX";
        int fd = ::mkstemp(path);
        if (fd < 0) return nullptr;
        bool sized = ::ftruncate(fd, 64 * 512) == 0;
        ::close(fd);
        std::shared_ptr<virtio::Blk> blk;
        if (sized)
            if (auto b = virtio::Blk::open("fuzz-blk", virtio::DiskSpec{path, false})) blk = *b;
        ::unlink(path);
        if (!blk) return nullptr;  // no io_uring here: the device part is skipped
        auto* disk = new Disk{blk, nullptr};
        disk->transport = std::make_unique<virtio::MmioTransport>(disk->blk, ram(), [] {});
        return disk;
    }();
    return d;
}

// Rewrites the checksum of every complete section (bit0 of the flags).
void fix_checksums(std::vector<uint8_t>& s) {
    size_t pos = 0;
    while (s.size() - pos >= sizeof(SectionFrame)) {
        SectionFrame f;
        std::memcpy(&f, &s[pos], sizeof(f));
        if (f.length > s.size() - pos - sizeof(f) || s.size() - pos - sizeof(f) - f.length < 8) return;
        uint64_t sum = XXH3_64bits(&s[pos], sizeof(f) + f.length);
        pos += sizeof(f) + f.length;
        std::memcpy(&s[pos], &sum, 8);
        pos += 8;
    }
}

void send_all(int fd, const std::vector<uint8_t>& s) {
    size_t done = 0;
    while (done < s.size()) {
        ssize_t n = ::send(fd, s.data() + done, s.size() - done, MSG_NOSIGNAL);
        if (n <= 0) return;  // the loader stopped reading and closed its end
        done += static_cast<size_t>(n);
    }
}

StreamHeader our_header() {
    StreamHeader h;
    h.cpus = 1;
    for (const auto& r : ram().regions()) h.ram.push_back({r.start, r.size()});
    return h;
}

void on_header(std::span<const uint8_t> payload) {
    auto h = decode_header(payload);
    if (!h) return;
    (void)header_mismatch(our_header(), *h);
    auto again = encode_header(*h);
    if (!std::equal(again.begin(), again.end(), payload.begin(), payload.end())) __builtin_trap();
}

template <class State>
void check_reencodes(const State& st, std::span<const uint8_t> read) {
    StateWriter w;
    st.save(w);
    const auto& b = w.bytes();
    if (!std::equal(b.begin(), b.end(), read.begin(), read.end())) __builtin_trap();
}

void on_vcpu_state(std::span<const uint8_t> payload) {
    StateReader r(payload);
    uint64_t saved_at = 0;
    r.get(saved_at);
    auto st = VcpuState::load(r);
    if (st && r.at_end()) check_reencodes(*st, payload.subspan(8));
}

void on_vm_state(std::span<const uint8_t> payload) {
    StateReader r(payload);
    auto st = VmState::load(r);
    if (st && r.at_end()) check_reencodes(*st, payload);
}

void on_device_state(std::span<const uint8_t> payload) {
    auto rec = decode_record(payload);
    if (!rec) return;
    switch (static_cast<DeviceKind>(rec->kind)) {
        case DeviceKind::Serial8250: {
            Serial s(-1, {});
            (void)load_record(s, *rec);
            return;
        }
        case DeviceKind::Rtc: {
            Rtc rtc(64 << 20, 0, 1, [] { return int64_t{1700000000}; });
            (void)load_record(rtc, *rec);
            return;
        }
        default: break;
    }
    Disk* d = disk();
    if (!d) return;
    virtio::VirtioDevice& dev = d->transport->device();
    if (load_record(*d->transport, *rec)) dev.drain();  // a restored live queue is served once (the machine's start kicks it)
    dev.reset();  // stop serving guest RAM that the next input rewrites
}

void on_section(const Section& s) {
    switch (s.kind) {
        case SectionKind::Header: on_header(s.payload); break;
        case SectionKind::RamBatch: (void)apply_ram_batch(ram(), s.payload); break;
        case SectionKind::Discard:
        case SectionKind::PageRequest: (void)decode_page_runs(ram(), s.payload); break;
        case SectionKind::HeaderAck: (void)decode_caps(s.payload); break;
        case SectionKind::VcpuState: on_vcpu_state(s.payload); break;
        case SectionKind::VmState: on_vm_state(s.payload); break;
        case SectionKind::DeviceState: on_device_state(s.payload); break;
        case SectionKind::Error: {
            StateReader r(s.payload);
            std::string reason;
            (void)r.get_string(reason, 4096);
            break;
        }
        default: break;
    }
}

void load(Channel& ch, uint8_t flags) {
    if (flags & 4) {
        auto h = expect_section(ch, SectionKind::Header);
        if (!h) return;
        on_section(*h);
    }
    Section s{};
    for (int i = 0; i < kMaxSections; ++i) {
        if (!recv_section_into(ch, s)) return;
        on_section(s);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    fuzz::clear_fake_ram();
    fuzz::FuzzInput in(data, size);
    const auto flags = in.take<uint8_t>();
    auto rest = in.rest();
    std::vector<uint8_t> stream(rest.begin(), rest.end());
    if (flags & 1) fix_checksums(stream);

    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) __builtin_trap();
    std::thread writer;
    if (stream.size() <= kSocketFits) {
        send_all(sv[0], stream);
        ::close(sv[0]);
    } else {
        writer = std::thread([&] {
            send_all(sv[0], stream);
            ::close(sv[0]);
        });
    }
    {
        Channel ch{Fd(sv[1])};
        load(ch, flags);
    }  // closes the loader's end: a writer still sending gets EPIPE
    if (writer.joinable()) writer.join();
    return 0;
}
