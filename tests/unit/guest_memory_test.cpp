// GuestMemory::slice bounds: top of the address space, zero length, holes, region ends.
#include <catch2/catch.hpp>

#include <vector>

#include "memory/guest_memory.hpp"

using namespace ferry;

namespace {
struct TwoRegions {
    std::vector<uint8_t> low = std::vector<uint8_t>(0x10000, 0);
    std::vector<uint8_t> high = std::vector<uint8_t>(0x10000, 0);
    GuestMemory mem;
    TwoRegions() {
        REQUIRE(mem.add_region(Gpa(0), MmapRegion::borrowed(low.data(), low.size())));
        REQUIRE(mem.add_region(Gpa(0x100000), MmapRegion::borrowed(high.data(), high.size())));
    }
};
}  // namespace

TEST_CASE("slice accepts ranges inside one region", "[memory]") {
    TwoRegions t;
    auto s = t.mem.slice(Gpa(0x10), 0x20);
    REQUIRE(s);
    CHECK(s->data() == t.low.data() + 0x10);
    CHECK(s->size() == 0x20);
    auto whole = t.mem.slice(Gpa(0x100000), 0x10000);
    REQUIRE(whole);
    CHECK(whole->data() == t.high.data());
    auto last = t.mem.slice(Gpa(0xffff), 1);
    REQUIRE(last);
}

TEST_CASE("slice refuses holes, region ends and overflow", "[memory]") {
    TwoRegions t;
    CHECK_FALSE(t.mem.slice(Gpa(0x10000), 1));             // first byte of the hole
    CHECK_FALSE(t.mem.slice(Gpa(0xfff0), 0x20));           // crosses into the hole
    CHECK_FALSE(t.mem.slice(Gpa(0xfff0), 0x100000));       // spans the hole to the next region
    CHECK_FALSE(t.mem.slice(Gpa(0x10ffff), 2));            // crosses the end of RAM
    CHECK_FALSE(t.mem.slice(Gpa(UINT64_MAX), 1));          // top of the address space
    CHECK_FALSE(t.mem.slice(Gpa(0x10), UINT64_MAX));       // length overflows
    CHECK_FALSE(t.mem.slice(Gpa(UINT64_MAX - 4), 16));     // wraps
    CHECK_FALSE(t.mem.read_obj<uint64_t>(Gpa(0xfffc)));
    CHECK(t.mem.read_obj<uint64_t>(Gpa(0xfff8)));
}

TEST_CASE("zero-length slices are valid only inside RAM", "[memory]") {
    TwoRegions t;
    auto z = t.mem.slice(Gpa(0x100), 0);
    REQUIRE(z);
    CHECK(z->empty());
    CHECK_FALSE(t.mem.slice(Gpa(0x20000), 0));
    CHECK_FALSE(t.mem.slice(Gpa(UINT64_MAX), 0));
}

TEST_CASE("regions must not overlap or wrap", "[memory]") {
    TwoRegions t;
    std::vector<uint8_t> extra(0x2000);
    CHECK_FALSE(t.mem.add_region(Gpa(0xf000), MmapRegion::borrowed(extra.data(), extra.size())));
    CHECK_FALSE(t.mem.add_region(Gpa(0x123), MmapRegion::borrowed(extra.data(), extra.size())));
    CHECK_FALSE(t.mem.add_region(Gpa(UINT64_MAX - 0xfff), MmapRegion::borrowed(extra.data(), extra.size())));
    CHECK(t.mem.add_region(Gpa(0x200000), MmapRegion::borrowed(extra.data(), extra.size())));
    CHECK(t.mem.total_size() == 0x22000);
}

TEST_CASE("RAM above 3 GiB continues at 4 GiB", "[memory]") {
    auto small = ram_layout(512ull << 20);
    REQUIRE(small.size() == 1);
    CHECK(small[0].size == 512ull << 20);
    auto big = ram_layout(6ull << 30);
    REQUIRE(big.size() == 2);
    CHECK(big[0].size == 3ull << 30);
    CHECK(big[1].start == Gpa(4ull << 30));
    CHECK(big[1].size == 3ull << 30);
}

TEST_CASE("guest RAM is 2 MiB aligned in host memory", "[memory]") {
    auto mem = GuestMemory::create(8ull << 20, Backend::Anonymous);
    REQUIRE(mem);
    CHECK(reinterpret_cast<uintptr_t>(mem->regions()[0].map.addr()) % kHugePageSize == 0);
    auto fd_backed = GuestMemory::create(4ull << 20, Backend::Memfd);
    REQUIRE(fd_backed);
    CHECK(fd_backed->regions()[0].map.fd() >= 0);
    CHECK_FALSE(GuestMemory::create(0, Backend::Anonymous));
    CHECK_FALSE(GuestMemory::create(3ull << 20, Backend::Anonymous));
}
