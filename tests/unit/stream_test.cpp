// The migration stream: framing, checksums, caps, header checks, and RAM batches
// from a hostile peer (over a socketpair, no KVM).
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <thread>
#include <vector>

#include "base/state_io.hpp"
#include "migration/stream.hpp"
#include "socket_pair.hpp"

using namespace ferry;

namespace {

using Pair = test::ChannelPair;

struct Ram {
    std::vector<uint8_t> buf = std::vector<uint8_t>(64 * 4096, 0);
    GuestMemory mem;
    Ram() { REQUIRE(mem.add_region(Gpa(0x100000), MmapRegion::borrowed(buf.data(), buf.size()))); }
};

std::vector<uint8_t> batch(std::vector<uint64_t> entries, size_t data_pages, uint8_t fill = 0x5a) {
    std::vector<uint8_t> p(4 + entries.size() * 8 + data_pages * 4096, fill);
    uint32_t n = static_cast<uint32_t>(entries.size());
    std::memcpy(p.data(), &n, 4);
    std::memcpy(p.data() + 4, entries.data(), entries.size() * 8);
    return p;
}

}  // namespace

TEST_CASE("sections round-trip with their checksum", "[stream]") {
    Pair p;
    std::vector<uint8_t> payload(1000, 7);
    REQUIRE(send_section(*p.a, SectionKind::VmState, 3, payload));
    auto s = recv_section(*p.b);
    REQUIRE(s);
    CHECK(s->kind == SectionKind::VmState);
    CHECK(s->instance == 3);
    CHECK(s->payload == payload);
}

TEST_CASE("a corrupted, oversized or unknown section is refused", "[stream]") {
    auto raw = [](SectionFrame f, std::vector<uint8_t> payload, uint64_t sum) {
        std::vector<uint8_t> out(sizeof(f) + payload.size() + 8);
        std::memcpy(out.data(), &f, sizeof(f));
        if (!payload.empty()) std::memcpy(out.data() + sizeof(f), payload.data(), payload.size());
        std::memcpy(out.data() + sizeof(f) + payload.size(), &sum, 8);
        return out;
    };
    SECTION("bad checksum") {
        Pair p;
        REQUIRE(p.a->send_all(raw({6, 1, 0, 4}, {1, 2, 3, 4}, 12345)));
        auto s = recv_section(*p.b);
        REQUIRE_FALSE(s);
        CHECK(s.error().message().find("checksum") != std::string::npos);
    }
    SECTION("huge length is capped before allocating") {
        Pair p;
        REQUIRE(p.a->send_all(raw({3, 1, 0, 1ull << 40}, {}, 0)));
        auto s = recv_section(*p.b);
        REQUIRE_FALSE(s);
        CHECK(s.error().message().find("cap") != std::string::npos);
    }
    SECTION("unknown kind and future version") {
        Pair p;
        REQUIRE(p.a->send_all(raw({99, 1, 0, 0}, {}, 0)));
        CHECK_FALSE(recv_section(*p.b));
        Pair q;
        REQUIRE(q.a->send_all(raw({3, 9, 0, 0}, {}, 0)));
        auto s = recv_section(*q.b);
        REQUIRE_FALSE(s);
        CHECK(s.error().message().find("version") != std::string::npos);
    }
    SECTION("peer closes mid-section") {
        Pair p;
        auto bytes = raw({6, 1, 0, 100}, std::vector<uint8_t>(10), 0);
        REQUIRE(p.a->send_all(bytes));
        p.a.reset();
        CHECK_FALSE(recv_section(*p.b));
    }
    SECTION("an Error section becomes the peer's reason") {
        Pair p;
        REQUIRE(send_error(*p.a, "disk on fire"));
        auto s = expect_section(*p.b, SectionKind::Ready);
        REQUIRE_FALSE(s);
        CHECK(s.error().message().find("disk on fire") != std::string::npos);
    }
}

TEST_CASE("the header describes the guest and mismatches are named", "[stream]") {
    StreamHeader h;
    h.cpus = 2;
    h.tsc_khz = 2000000;
    h.ram = {{Gpa(0), 3ull << 30}, {Gpa(4ull << 30), 1ull << 30}};
    auto d = decode_header(encode_header(h));
    REQUIRE(d);
    CHECK(d->cpus == 2);
    CHECK(d->ram.size() == 2);
    CHECK(header_mismatch(h, *d).empty());
    auto other = h;
    other.cpus = 1;
    CHECK(header_mismatch(h, other).find("vCPUs") != std::string::npos);
    other = h;
    other.ram[1].size = 2ull << 30;
    CHECK(header_mismatch(h, other).find("RAM") != std::string::npos);
    other = h;
    other.version = kStreamVersion + 1;
    CHECK(header_mismatch(h, other).find("version") != std::string::npos);
    auto bytes = encode_header(h);
    bytes[0] = 'X';
    CHECK_FALSE(decode_header(bytes));
    bytes = encode_header(h);
    bytes.pop_back();
    CHECK_FALSE(decode_header(bytes));
}

TEST_CASE("RAM batches are validated whole before any page is written", "[stream]") {
    Ram ram;
    const uint64_t base = 0x100000;
    SECTION("data and zero pages land") {
        ram.buf[4096] = 9;  // page 1 has data; a zero entry clears it
        auto p = batch({(base + 0) | kPageFlagData, (base + 4096) | kPageFlagZero}, 1);
        auto st = apply_ram_batch(ram.mem, p);
        REQUIRE(st);
        CHECK(st->data == 1);
        CHECK(st->zero == 1);
        CHECK(ram.buf[0] == 0x5a);
        CHECK(ram.buf[4096] == 0);
    }
    SECTION("a page outside RAM rejects the batch and writes nothing") {
        auto p = batch({(base + 0) | kPageFlagData, (base + 64 * 4096) | kPageFlagData}, 2);
        auto st = apply_ram_batch(ram.mem, p);
        REQUIRE_FALSE(st);
        CHECK(ram.buf[0] == 0);
    }
    SECTION("hostile tables") {
        CHECK_FALSE(apply_ram_batch(ram.mem, batch({(base + 1) | kPageFlagData}, 1)));           // flags 3
        CHECK_FALSE(apply_ram_batch(ram.mem, batch({base | 8}, 0)));                              // unknown flag
        CHECK_FALSE(apply_ram_batch(ram.mem, batch({base | kPageFlagData}, 0)));                  // data missing
        CHECK_FALSE(apply_ram_batch(ram.mem, batch({base | kPageFlagZero}, 1)));                  // extra data
        CHECK_FALSE(apply_ram_batch(ram.mem, batch({(~0ull & ~4095ull) | kPageFlagData}, 1)));   // top of space
        std::vector<uint8_t> liar(4, 0);
        uint32_t n = 100000;
        std::memcpy(liar.data(), &n, 4);
        CHECK_FALSE(apply_ram_batch(ram.mem, liar));
        CHECK_FALSE(apply_ram_batch(ram.mem, std::vector<uint8_t>(2)));
        for (uint8_t b : ram.buf) REQUIRE(b == 0);
    }
}

TEST_CASE("state readers refuse truncated input", "[stream]") {
    StateWriter w;
    w.put(uint32_t{5});
    w.put_string("hello");
    auto bytes = w.take();
    for (size_t len = 0; len < bytes.size(); ++len) {
        StateReader r(std::span<const uint8_t>(bytes.data(), len));
        uint32_t v;
        std::string s;
        r.get(v);
        r.get_string(s, 100);
        CHECK_FALSE(r.ok());
    }
    StateReader r(bytes);
    uint32_t v;
    std::string s;
    REQUIRE(r.get(v));
    REQUIRE(r.get_string(s, 100));
    CHECK(r.at_end());
    StateReader small(bytes);
    small.get(v);
    CHECK_FALSE(small.get_string(s, 3));  // longer than allowed
}

TEST_CASE("a RAM batch is verified whole before any page is placed", "[stream]") {
    Ram ram;
    const uint64_t base = 0x100000;
    Section s;
    SECTION("a good batch lands through the placer") {
        Pair p;
        auto payload = batch({(base + 4096) | kPageFlagData, base | kPageFlagZero}, 1, 0x33);
        REQUIRE(send_section(*p.a, SectionKind::RamBatch, 0, payload));
        REQUIRE(recv_section_into(*p.b, s));
        DirectPlacer direct;
        std::vector<DecodedPage> scratch;
        auto st = place_ram_batch(ram.mem, s.payload, direct, scratch);
        REQUIRE(st);
        CHECK(st->data == 1);
        CHECK(st->zero == 1);
        CHECK(ram.buf[4096] == 0x33);
        REQUIRE(scratch.size() == 2);
        CHECK(scratch[0].gpa == base + 4096);
        CHECK(scratch[0].index == 1);
        CHECK(scratch[1].data == nullptr);
    }
    SECTION("a bad checksum fails the batch and nothing is written") {
        Pair p;
        auto payload = batch({base | kPageFlagData}, 1, 0x44);
        SectionFrame f{static_cast<uint16_t>(SectionKind::RamBatch), 1, 0, payload.size()};
        std::vector<uint8_t> raw(sizeof(f) + payload.size() + 8, 0);
        std::memcpy(raw.data(), &f, sizeof(f));
        std::memcpy(raw.data() + sizeof(f), payload.data(), payload.size());
        REQUIRE(p.a->send_all(raw));
        auto st = recv_section_into(*p.b, s);
        REQUIRE_FALSE(st);
        CHECK(st.error().message().find("checksum") != std::string::npos);
        for (uint8_t b : ram.buf) REQUIRE(b == 0);
    }
    SECTION("a placer that refuses a page fails the batch") {
        struct Refuse : PagePlacer {
            Result<void> place(const DecodedPage&) override { return fail(Domain::Migration, "no"); }
        } refuse;
        std::vector<DecodedPage> scratch;
        CHECK_FALSE(place_ram_batch(ram.mem, batch({base | kPageFlagData}, 1), refuse, scratch));
    }
}

TEST_CASE("page lists and capabilities decode only what is inside guest RAM", "[stream]") {
    Ram ram;
    const uint64_t base = 0x100000;
    std::vector<PageRun> runs{{base, 2}, {base + 8 * 4096, 1}};
    auto d = decode_page_runs(ram.mem, encode_page_runs(runs));
    REQUIRE(d);
    REQUIRE(d->size() == 2);
    CHECK((*d)[0].pages == 2);
    CHECK((*d)[1].gpa == base + 8 * 4096);
    std::vector<PageRun> outside{{base + 63 * 4096, 2}};  // runs past the end of RAM
    CHECK_FALSE(decode_page_runs(ram.mem, encode_page_runs(outside)));
    std::vector<PageRun> unaligned{{base + 1, 1}};
    CHECK_FALSE(decode_page_runs(ram.mem, encode_page_runs(unaligned)));
    std::vector<PageRun> empty{{base, 0}};
    CHECK_FALSE(decode_page_runs(ram.mem, encode_page_runs(empty)));
    auto bytes = encode_page_runs(runs);
    bytes.pop_back();
    CHECK_FALSE(decode_page_runs(ram.mem, bytes));
    CHECK(*decode_caps(encode_caps(kCapPostcopy)) == kCapPostcopy);
    CHECK(*decode_caps({}) == 0);
    CHECK_FALSE(decode_caps(std::vector<uint8_t>{1, 2}));
    uint64_t token = 0;
    CHECK(*decode_caps(encode_caps(kCapPostcopy | kCapUrgentChannel, 0x1122334455667788ull), &token) == (kCapPostcopy | kCapUrgentChannel));
    CHECK(token == 0x1122334455667788ull);
    auto cut = encode_caps(kCapUrgentChannel, 1);
    cut.resize(8);
    CHECK_FALSE(decode_caps(cut));  // the token cut short
}
