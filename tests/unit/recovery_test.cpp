// Postcopy recovery's handshake (migration/recovery.hpp): the received bitmap travels
// whole and exact, and a hostile or confused peer's bitmap is refused (over a
// socketpair, no KVM).
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <vector>

#include "migration/recovery.hpp"
#include "socket_pair.hpp"

using namespace ferry;

namespace {

// Room for a whole bitmap of a few hundred thousand pages before anyone reads.
struct Pair : test::ChannelPair {
    Pair() : test::ChannelPair(4 << 20) {}
};

void send_words(Channel& ch, uint32_t instance, const std::vector<uint64_t>& w) {
    REQUIRE(send_section(ch, SectionKind::ReceivedBitmap, instance,
                         std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(w.data()), w.size() * 8)));
}

void send_ack(Channel& ch, uint64_t pages) {
    REQUIRE(send_section(ch, SectionKind::ResumeAck, 0, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&pages), 8)));
}

}  // namespace

TEST_CASE("recovery: the received bitmap arrives exactly, over several slices", "[recovery]") {
    // 3 slices: 2 whole, one of 100 words; the last word only partly used.
    const uint64_t pages = 2 * kBitmapWordsPerSection * 64 + 100 * 64 - 13;
    AtomicBitmap held(pages);
    for (uint64_t p = 0; p < pages; p += 7) held.set(p);
    held.set(pages - 1);
    Pair ch;
    REQUIRE(send_received_bitmap(*ch.a, held));
    auto got = receive_received_bitmap(*ch.b, pages);
    REQUIRE(got);
    AtomicBitmap copy(pages);
    copy.assign(*got);
    CHECK(copy.count() == held.count());
    for (uint64_t w = 0; w < held.words(); ++w) REQUIRE(copy.word(w) == held.word(w));
}

TEST_CASE("recovery: a resume section carries the token, and nothing else passes for one", "[recovery]") {
    Pair ch;
    REQUIRE(send_resume(*ch.a, 0x0123456789abcdefull));
    auto s = recv_section(*ch.b);
    REQUIRE(s);
    CHECK(resume_token(*s) == 0x0123456789abcdefull);
    s->payload.push_back(0);
    CHECK_FALSE(resume_token(*s));
    s->payload.resize(8);
    s->kind = SectionKind::UrgentHello;
    CHECK_FALSE(resume_token(*s));
}

TEST_CASE("recovery: a bad received bitmap is refused", "[recovery]") {
    const uint64_t pages = 1000;  // 16 words, one slice
    std::vector<uint64_t> words(16, ~0ull);
    words.back() = (1ull << (pages % 64)) - 1;
    SECTION("another guest's page count") {
        Pair ch;
        send_words(*ch.a, 0, words);
        send_ack(*ch.a, pages + 1);
        auto r = receive_received_bitmap(*ch.b, pages);
        REQUIRE_FALSE(r);
        CHECK(r.error().message().find("pages") != std::string::npos);
    }
    SECTION("a slice missing") {
        Pair ch;
        send_ack(*ch.a, pages);
        CHECK_FALSE(receive_received_bitmap(*ch.b, pages));
    }
    SECTION("a slice twice") {
        Pair ch;
        send_words(*ch.a, 0, words);
        send_words(*ch.a, 0, words);
        send_ack(*ch.a, pages);
        CHECK_FALSE(receive_received_bitmap(*ch.b, pages));
    }
    SECTION("a slice out of range") {
        Pair ch;
        send_words(*ch.a, 7, words);
        CHECK_FALSE(receive_received_bitmap(*ch.b, pages));
    }
    SECTION("a slice of the wrong length") {
        Pair ch;
        words.pop_back();
        send_words(*ch.a, 0, words);
        CHECK_FALSE(receive_received_bitmap(*ch.b, pages));
    }
    SECTION("a page past the end of RAM") {
        Pair ch;
        words.back() |= 1ull << 63;
        send_words(*ch.a, 0, words);
        send_ack(*ch.a, pages);
        auto r = receive_received_bitmap(*ch.b, pages);
        REQUIRE_FALSE(r);
        CHECK(r.error().message().find("past the end") != std::string::npos);
    }
    SECTION("another section, or the destination's refusal") {
        Pair ch;
        REQUIRE(send_error(*ch.a, "refused"));
        auto r = receive_received_bitmap(*ch.b, pages);
        REQUIRE_FALSE(r);
        CHECK(r.error().message().find("refused") != std::string::npos);
        Pair ch2;
        REQUIRE(send_section(*ch2.a, SectionKind::Go, 0, std::span<const uint8_t>()));
        CHECK_FALSE(receive_received_bitmap(*ch2.b, pages));
    }
    SECTION("the well-formed one passes") {
        Pair ch;
        send_words(*ch.a, 0, words);
        send_ack(*ch.a, pages);
        auto r = receive_received_bitmap(*ch.b, pages);
        REQUIRE(r);
        CHECK(*r == words);
    }
}
