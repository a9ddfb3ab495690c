// The self-announcement's frame and schedule (devices/virtio/announce.hpp), checked
// against the RARP layout (RFC 903 over the ARP header of RFC 826) and QEMU's schedule.
#include <catch2/catch.hpp>

#include "devices/virtio/announce.hpp"

using namespace ferry::virtio;

TEST_CASE("announce: the RARP frame carries the MAC as sender and target", "[virtio][announce]") {
    const MacAddress mac{0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
    auto f = rarp_frame(mac);
    REQUIRE(f.size() == 60);
    for (int i = 0; i < 6; ++i) {
        CHECK(f[i] == 0xff);           // broadcast
        CHECK(f[6 + i] == mac[i]);     // Ethernet source
        CHECK(f[22 + i] == mac[i]);    // sender hardware address
        CHECK(f[32 + i] == mac[i]);    // target hardware address
    }
    CHECK((f[12] == 0x80 && f[13] == 0x35));  // ethertype RARP
    CHECK((f[14] == 0 && f[15] == 1));        // hardware: Ethernet
    CHECK((f[16] == 0x08 && f[17] == 0x00));  // protocol: IPv4
    CHECK((f[18] == 6 && f[19] == 4));
    CHECK((f[20] == 0 && f[21] == 3));  // reverse request
    for (size_t i : {28u, 29u, 30u, 31u, 38u, 39u, 40u, 41u}) CHECK(f[i] == 0);  // no IPv4 addresses
    for (size_t i = 42; i < 60; ++i) CHECK(f[i] == 0);
}

TEST_CASE("announce: QEMU's default schedule sends at 0, 50, 200, 450 and 800 ms", "[virtio][announce]") {
    AnnounceParams p;  // initial 50, max 550, rounds 5, step 100
    uint64_t t = 0;
    std::vector<uint64_t> at = {0};
    for (uint64_t sent = 1; sent < p.rounds; ++sent) at.push_back(t += announce_gap_ms(p, sent));
    CHECK(at == std::vector<uint64_t>{0, 50, 200, 450, 800});
    // Gaps stop growing at max.
    AnnounceParams capped{10, 25, 6, 10};
    CHECK(announce_gap_ms(capped, 1) == 10);
    CHECK(announce_gap_ms(capped, 2) == 20);
    CHECK(announce_gap_ms(capped, 3) == 25);
    CHECK(announce_gap_ms(capped, 5) == 25);
}

TEST_CASE("announce: out-of-range parameters are refused by name", "[virtio][announce]") {
    CHECK(check_announce(AnnounceParams{}));
    CHECK(check_announce(AnnounceParams{0, 0, 1, 0}));
    auto zero = check_announce(AnnounceParams{50, 550, 0, 100});
    REQUIRE(!zero);
    CHECK(zero.error().message().find("rounds 0") != std::string::npos);
    CHECK(!check_announce(AnnounceParams{50, 550, kMaxAnnounceRounds + 1, 100}));
    auto big = check_announce(AnnounceParams{50, 550, 5, kMaxAnnounceMs + 1});
    REQUIRE(!big);
    CHECK(big.error().message().find("step") != std::string::npos);
    CHECK(!check_announce(AnnounceParams{UINT64_MAX, 550, 5, 100}));
    CHECK(!check_announce(AnnounceParams{50, UINT64_MAX, 5, 100}));
}
