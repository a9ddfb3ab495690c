// virtio: the split virtqueue against hostile chains (loops, out-of-RAM buffers, huge
// lengths, bad indices, wrong directions, nested indirect tables), queue state
// validation, the MMIO transport's registers and virtio-blk requests on a temp image.
// All on a fake guest memory (a vector), no KVM.
#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "cli/specs.hpp"
#include "devices/virtio/blk.hpp"
#include "devices/virtio/mmio.hpp"
#include "devices/virtio/queue.hpp"
#include "vmm/boot/linux.hpp"

using namespace ferry;
using namespace ferry::virtio;

namespace {

constexpr uint64_t kRam = 1 << 20;
constexpr uint64_t kDesc = 0x1000, kAvail = 0x2000, kUsed = 0x3000;
constexpr uint16_t kSize = 8;

struct Raw {
    uint64_t addr;
    uint32_t len;
    uint16_t flags, next;
};

struct Fake {
    std::vector<uint8_t> ram = std::vector<uint8_t>(kRam, 0);
    GuestMemory mem;
    Queue q{256};
    uint16_t avail_idx = 0;
    Fake() {
        REQUIRE(mem.add_region(Gpa(0), MmapRegion::borrowed(ram.data(), ram.size())));
        q.set_size(kSize);
        q.set_desc(kDesc);
        q.set_avail(kAvail);
        q.set_used(kUsed);
        REQUIRE(q.set_ready(mem, true));
    }
    void desc(uint64_t table, uint16_t i, Raw d) { std::memcpy(&ram[table + 16ull * i], &d, 16); }
    void desc(uint16_t i, Raw d) { desc(kDesc, i, d); }
    void offer(uint16_t head) {
        std::memcpy(&ram[kAvail + 4 + 2 * (avail_idx % kSize)], &head, 2);
        ++avail_idx;
        std::memcpy(&ram[kAvail + 2], &avail_idx, 2);
    }
    Chain pop_one() {
        auto c = q.pop(mem);
        REQUIRE(c);
        REQUIRE(c->has_value());
        return std::move(**c);
    }
    uint16_t used_idx() const {
        uint16_t v;
        std::memcpy(&v, &ram[kUsed + 2], 2);
        return v;
    }
};

}  // namespace

TEST_CASE("virtqueue: a good chain is parsed and completed", "[virtio]") {
    Fake f;
    f.desc(0, {0x10000, 16, kDescFNext, 3});
    f.desc(3, {0x11000, 512, kDescFNext | kDescFWrite, 5});
    f.desc(5, {0x12000, 1, kDescFWrite, 0});
    f.offer(0);
    Chain c = f.pop_one();
    CHECK_FALSE(c.error);
    CHECK(c.head == 0);
    CHECK(c.descs.size() == 3);
    CHECK(c.readable == 16);
    CHECK(c.writable == 513);
    auto none = f.q.pop(f.mem);
    REQUIRE(none);
    CHECK_FALSE(none->has_value());
    REQUIRE(f.q.add_used(f.mem, c.head, 513));
    CHECK(f.used_idx() == 1);
    uint32_t elem[2];
    std::memcpy(elem, &f.ram[kUsed + 4], 8);
    CHECK(elem[0] == 0);
    CHECK(elem[1] == 513);
}

TEST_CASE("virtqueue: hostile chains are reported, never followed", "[virtio]") {
    Fake f;
    SECTION("a loop") {
        f.desc(0, {0x10000, 16, kDescFNext, 1});
        f.desc(1, {0x10000, 16, kDescFNext, 0});
    }
    SECTION("a self loop") { f.desc(0, {0x10000, 16, kDescFNext, 0}); }
    SECTION("a buffer outside RAM") { f.desc(0, {kRam - 8, 16, 0, 0}); }
    SECTION("a buffer at the top of the address space") { f.desc(0, {~0ull - 4, 16, 0, 0}); }
    SECTION("a huge length") { f.desc(0, {0x10000, 0xffffffff, 0, 0}); }
    SECTION("next beyond the queue") { f.desc(0, {0x10000, 16, kDescFNext, kSize}); }
    SECTION("readable after writable") {
        f.desc(0, {0x10000, 16, kDescFWrite | kDescFNext, 1});
        f.desc(1, {0x11000, 16, 0, 0});
    }
    SECTION("indirect without the feature") { f.desc(0, {0x20000, 32, kDescFIndirect, 0}); }
    f.offer(0);
    Chain c = f.pop_one();
    REQUIRE(c.error);
    CHECK(c.descs.empty());
    // The chain is consumed: the device completes it and the queue goes on.
    REQUIRE(f.q.add_used(f.mem, c.head, 0));
    CHECK(f.used_idx() == 1);
}

TEST_CASE("virtqueue: a head index beyond the queue", "[virtio]") {
    Fake f;
    f.offer(kSize + 3);
    Chain c = f.pop_one();
    CHECK(c.error);
}

TEST_CASE("virtqueue: indirect tables are checked through the accessor", "[virtio]") {
    Fake f;
    f.q.set_indirect(true);
    constexpr uint64_t kTable = 0x20000;
    SECTION("a good indirect chain") {
        f.desc(kTable, 0, {0x10000, 16, kDescFNext, 1});
        f.desc(kTable, 1, {0x11000, 1, kDescFWrite, 0});
        f.desc(0, {kTable, 32, kDescFIndirect, 0});
        f.offer(0);
        Chain c = f.pop_one();
        CHECK_FALSE(c.error);
        CHECK(c.readable == 16);
        CHECK(c.writable == 1);
    }
    auto bad = [&](Raw head) {
        f.desc(0, head);
        f.offer(0);
        Chain c = f.pop_one();
        CHECK(c.error);
    };
    SECTION("nested indirect") {
        f.desc(kTable, 0, {kTable, 16, kDescFIndirect, 0});
        bad({kTable, 16, kDescFIndirect, 0});
    }
    SECTION("a loop inside the table") {
        f.desc(kTable, 0, {0x10000, 16, kDescFNext, 1});
        f.desc(kTable, 1, {0x10000, 16, kDescFNext, 0});
        bad({kTable, 32, kDescFIndirect, 0});
    }
    SECTION("an index beyond the table") {
        f.desc(kTable, 0, {0x10000, 16, kDescFNext, 2});
        bad({kTable, 32, kDescFIndirect, 0});
    }
    SECTION("a table outside RAM") { bad({kRam - 16, 32, kDescFIndirect, 0}); }
    SECTION("a table length not a multiple of 16") { bad({kTable, 24, kDescFIndirect, 0}); }
    SECTION("an empty table") { bad({kTable, 0, kDescFIndirect, 0}); }
    SECTION("indirect with NEXT") { bad({kTable, 16, kDescFIndirect | kDescFNext, 1}); }
    SECTION("lengths adding up past 32 bits") {
        // 4100 descriptors of 1 MiB each: every one inside RAM, the total is not.
        constexpr uint32_t n = 4100;
        constexpr uint64_t big = 0x80000;  // table at 512 KiB, 64 KiB long
        for (uint16_t i = 0; i < n; ++i) f.desc(big, i, {0, static_cast<uint32_t>(kRam), kDescFNext, static_cast<uint16_t>(i + 1)});
        f.desc(big, n - 1, {0, static_cast<uint32_t>(kRam), 0, 0});
        bad({big, n * 16, kDescFIndirect, 0});
    }
}

TEST_CASE("virtqueue: an avail index too far ahead breaks the queue", "[virtio]") {
    Fake f;
    uint16_t idx = kSize + 1;
    std::memcpy(&f.ram[kAvail + 2], &idx, 2);
    auto c = f.q.pop(f.mem);
    CHECK_FALSE(c);
}

TEST_CASE("virtqueue: random rings never crash the parser", "[virtio]") {
    Fake f;
    f.q.set_indirect(true);
    std::mt19937_64 rng(42);
    int accepted = 0, malformed = 0, broken = 0;
    uint16_t offered = 0;  // heads consumed so far
    for (int round = 0; round < 2000; ++round) {
        for (uint16_t i = 0; i < kSize; ++i) {
            if (rng() % 2) {  // random bytes: nearly always refused
                uint64_t v[2] = {rng(), rng()};
                if (rng() % 2) v[0] &= 0x1ffff;  // a small address
                std::memcpy(&f.ram[kDesc + 16ull * i], v, 16);
            } else {  // plausible: inside RAM, a page at most, NEXT/WRITE at random (INDIRECT rarely)
                uint16_t flags = static_cast<uint16_t>(rng() % 4);
                if (rng() % 16 == 0) flags |= kDescFIndirect;
                f.desc(i, {rng() % (kRam - 4096), static_cast<uint32_t>(rng() % 4097), flags, static_cast<uint16_t>(rng() % kSize)});
            }
        }
        for (uint64_t off = kAvail; off < kAvail + 4 + 2 * kSize; off += 2) {
            // Heads: half of them in the table, half past it.
            uint16_t v = static_cast<uint16_t>(off < kAvail + 4 ? rng() : rng() % (2 * kSize));
            std::memcpy(&f.ram[off], &v, 2);
        }
        // Offer 1-4 random heads most rounds (an index far ahead breaks the queue for
        // good, which one round in 64 tries at the end).
        uint16_t idx = static_cast<uint16_t>(offered + 1 + rng() % 4);
        if (round == 1999) idx = static_cast<uint16_t>(offered + kSize + 1);
        std::memcpy(&f.ram[kAvail + 2], &idx, 2);
        for (int i = 0; i < 4; ++i) {
            auto c = f.q.pop(f.mem);
            if (!c) {
                ++broken;
                CHECK_FALSE(c.error().message().empty());
                break;
            }
            if (!*c) break;
            ++offered;
            const Chain& chain = **c;
            // A chain the parser accepts only points inside guest RAM, and its totals add up;
            // a malformed one says why and carries no buffer to use.
            if (!chain.error) {
                ++accepted;
                uint64_t readable = 0, writable = 0;
                for (const auto& d : chain.descs) {
                    CHECK(d.addr.raw() + d.len <= kRam);
                    (d.writable ? writable : readable) += d.len;
                }
                CHECK(readable == chain.readable);
                CHECK(writable == chain.writable);
            } else {
                ++malformed;
                CHECK_FALSE(chain.error->message().empty());
            }
            (void)f.q.add_used(f.mem, chain.head, 0);
        }
    }
    // The random rings hit every outcome: chains used, chains refused, the queue broken.
    CHECK(accepted > 0);
    CHECK(malformed > 0);
    CHECK(broken == 1);
}

TEST_CASE("virtqueue: state goes through the same validator", "[virtio]") {
    Fake f;
    QueueState good = f.q.state();
    good.last_avail_idx = 7;
    good.used_idx = 7;
    Queue q2(256);
    REQUIRE(q2.restore(good, f.mem));
    CHECK(q2.state().last_avail_idx == 7);
    auto refused = [&](QueueState s) {
        Queue q(256);
        CHECK_FALSE(q.restore(s, f.mem));
    };
    QueueState s = good;
    s.size = 0;
    refused(s);
    s = good;
    s.size = 6;  // not a power of two
    refused(s);
    s = good;
    s.size = 512;  // above the maximum
    refused(s);
    s = good;
    s.ready = 2;
    refused(s);
    s = good;
    s.desc = kRam - 16;  // table runs off RAM
    refused(s);
    s = good;
    s.used = 0x3002;  // misaligned
    refused(s);
    s = good;
    s.avail = ~0ull - 1;
    refused(s);
    // The driver's QueueReady goes through it too.
    Queue q3(256);
    q3.set_size(kSize);
    q3.set_desc(kRam);
    q3.set_avail(kAvail);
    q3.set_used(kUsed);
    CHECK_FALSE(q3.set_ready(f.mem, true));
    CHECK_FALSE(q3.ready());
}

namespace {

struct TempImage {
    std::string path;
    explicit TempImage(size_t bytes) {
        char tmpl[] = "/tmp/ferry-virtio-test-XXXXXX";
        int fd = mkstemp(tmpl);
        REQUIRE(fd >= 0);
        REQUIRE(ftruncate(fd, static_cast<off_t>(bytes)) == 0);
        close(fd);
        path = tmpl;
    }
    ~TempImage() { unlink(path.c_str()); }
};

uint32_t reg(MmioTransport& t, uint64_t off) {
    uint32_t v = 0;
    t.read(off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 4));
    return v;
}
void wreg(MmioTransport& t, uint64_t off, uint32_t v) {
    t.write(off, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v), 4));
}

// A driver for a blk device behind the transport, on the fake memory.
struct BlkRig {
    Fake f;  // its queue is unused; the transport has its own
    TempImage img{64 * 512};
    std::shared_ptr<Blk> blk;
    std::unique_ptr<MmioTransport> t;
    int irqs = 0;
    uint16_t avail = 0;
    explicit BlkRig(bool readonly = false) {
        auto b = Blk::open("blk0", DiskSpec{img.path, readonly});
        REQUIRE(b);
        blk = *b;
        t = std::make_unique<MmioTransport>(blk, f.mem, [this] { ++irqs; });
        wreg(*t, 0x070, 1 | 2);
        wreg(*t, 0x024, 1);
        wreg(*t, 0x020, 1);  // VERSION_1
        wreg(*t, 0x070, 1 | 2 | 8);
        REQUIRE(reg(*t, 0x070) & 8);
        wreg(*t, 0x030, 0);
        wreg(*t, 0x038, kSize);
        wreg(*t, 0x080, kDesc);
        wreg(*t, 0x090, kAvail);
        wreg(*t, 0x0a0, kUsed);
        wreg(*t, 0x044, 1);
        REQUIRE(reg(*t, 0x044) == 1);
        wreg(*t, 0x070, 1 | 2 | 8 | 4);
    }
    // One request: header at 0x10000, data at 0x11000 (len), status at 0x12000.
    uint8_t request(uint32_t type, uint64_t sector, uint32_t len) {
        struct {
            uint32_t type, reserved;
            uint64_t sector;
        } hdr{type, 0, sector};
        std::memcpy(&f.ram[0x10000], &hdr, 16);
        f.ram[0x12000] = 0xee;
        bool dev_writes = type == kBlkTIn || type == kBlkTGetId;
        f.desc(0, {0x10000, 16, kDescFNext, 1});
        if (len) {
            f.desc(1, {0x11000, len, static_cast<uint16_t>(kDescFNext | (dev_writes ? kDescFWrite : 0)), 2});
            f.desc(2, {0x12000, 1, kDescFWrite, 0});
        } else {
            f.desc(1, {0x12000, 1, kDescFWrite, 0});
        }
        std::memcpy(&f.ram[kAvail + 4 + 2 * (avail % kSize)], "\0\0", 2);
        ++avail;
        std::memcpy(&f.ram[kAvail + 2], &avail, 2);
        wreg(*t, 0x050, 0);
        t->drain();
        REQUIRE(f.used_idx() == avail);
        return f.ram[0x12000];
    }
};

}  // namespace

TEST_CASE("virtio-mmio: identification registers", "[virtio]") {
    BlkRig r;
    CHECK(reg(*r.t, 0x000) == kMagic);
    CHECK(reg(*r.t, 0x004) == 2);
    CHECK(reg(*r.t, 0x008) == 2);
    CHECK(reg(*r.t, 0x034) == kBlkQueueSize);
    uint64_t cap = 0;
    r.t->read(0x100, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&cap), 8));
    CHECK(cap == 64);
    // Odd sizes and offsets read as 0 and are ignored on write.
    uint8_t b = 0xaa;
    r.t->read(0x001, std::span<uint8_t>(&b, 1));
    CHECK(b == 0);
    r.t->write(0x070, std::span<const uint8_t>(&b, 1));
    CHECK(reg(*r.t, 0x070) == (1 | 2 | 4 | 8));
}

TEST_CASE("virtio-blk: write, read back, flush, get-id, bounds", "[virtio]") {
    BlkRig r;
    for (int i = 0; i < 1024; ++i) r.f.ram[0x11000 + i] = static_cast<uint8_t>(i * 7);
    CHECK(r.request(kBlkTOut, 3, 1024) == kBlkSOk);
    std::memset(&r.f.ram[0x11000], 0, 1024);
    CHECK(r.request(kBlkTIn, 3, 1024) == kBlkSOk);
    for (int i = 0; i < 1024; ++i) REQUIRE(r.f.ram[0x11000 + i] == static_cast<uint8_t>(i * 7));
    CHECK(r.request(kBlkTFlush, 0, 0) == kBlkSOk);
    CHECK(r.request(kBlkTGetId, 0, 20) == kBlkSOk);
    CHECK(std::string(reinterpret_cast<char*>(&r.f.ram[0x11000])).find("blk0") != std::string::npos);
    CHECK(r.request(kBlkTIn, 63, 1024) == kBlkSIoErr);       // runs past the end
    CHECK(r.request(kBlkTIn, ~0ull >> 1, 512) == kBlkSIoErr);  // sector overflow
    CHECK(r.request(kBlkTIn, 0, 100) == kBlkSIoErr);          // not whole sectors
    CHECK(r.request(99, 0, 512) == kBlkSUnsupp);
    CHECK(r.irqs > 0);
}

TEST_CASE("virtio-blk: a read-only disk refuses writes", "[virtio]") {
    BlkRig r(true);
    uint64_t features = reg(*r.t, 0x010);
    CHECK(features & kBlkFRo);
    CHECK(r.request(kBlkTOut, 0, 512) == kBlkSIoErr);
    CHECK(r.request(kBlkTIn, 0, 512) == kBlkSOk);
}

TEST_CASE("virtio-mmio: state saved and restored through the validator", "[virtio]") {
    BlkRig r;
    r.request(kBlkTIn, 0, 512);
    auto rec = save_record(*r.t);
    REQUIRE(rec);
    CHECK(rec->id == r.t->state_id());
    CHECK(rec->kind == static_cast<uint32_t>(DeviceKind::VirtioBlk));
    BlkRig dst;
    REQUIRE(load_record(*dst.t, *rec));
    CHECK(reg(*dst.t, 0x070) == (1 | 2 | 4 | 8));
    // A corrupted queue address is refused, and nothing of the record is applied.
    auto bad_rec = *rec;
    uint64_t bad = kRam + 0x1000;
    // Layout: u32 len + Blk::State, u32 len + MmioTransport::State, u32 count, u32 len +
    // QueueState (desc at +8).
    std::memcpy(&bad_rec.state[4 + sizeof(Blk::State) + 4 + sizeof(MmioTransport::State) + 4 + 4 + 8], &bad, 8);
    BlkRig dst2;
    dst2.request(kBlkTIn, 0, 512);
    auto refused = load_record(*dst2.t, bad_rec);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().message().find("queue 0") != std::string::npos);
    CHECK(dst2.request(kBlkTIn, 0, 512) == kBlkSOk);  // its device and queues are as they were
    // Trailing bytes, and a newer version than this build reads, are refused.
    auto longer = *rec;
    longer.state.push_back(0);
    CHECK_FALSE(load_record(*dst2.t, longer));
    auto newer = *rec;
    newer.version = dst2.t->state_version() + 1;
    auto too_new = load_record(*dst2.t, newer);
    REQUIRE_FALSE(too_new);
    CHECK(too_new.error().message().find("version") != std::string::npos);
}

TEST_CASE("--disk specs", "[virtio]") {
    auto a = parse_disk_spec("/x.img");
    REQUIRE(a);
    CHECK_FALSE(a->readonly);
    auto b = parse_disk_spec("/x.img,readonly");
    REQUIRE(b);
    CHECK(b->readonly);
    CHECK(b->path == "/x.img");
    CHECK_FALSE(parse_disk_spec("/x.img,bogus"));
    CHECK_FALSE(parse_disk_spec(",readonly"));
    CHECK_FALSE(Blk::open("b", DiskSpec{"/nonexistent/ferry.img", false}));
}

TEST_CASE("virtio-mmio devices are declared on the kernel command line", "[virtio]") {
    CHECK(with_virtio_mmio_devices("console=ttyS0", 0, kMmioBase, kMmioStride, kFirstIrq) == "console=ttyS0");
    CHECK(with_virtio_mmio_devices("console=ttyS0", 2, kMmioBase, kMmioStride, kFirstIrq) ==
          "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6");
    CHECK(with_virtio_mmio_devices("", 1, kMmioBase, kMmioStride, kFirstIrq) == "virtio_mmio.device=4K@0xd0000000:5");
}
