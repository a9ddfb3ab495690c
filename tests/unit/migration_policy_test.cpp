// The convergence policy (migration/policy.hpp) and the postcopy source's page cursor
// (migration/page_set.hpp), without a guest.
#include <catch2/catch.hpp>

#include <vector>

#include "migration/page_set.hpp"
#include "migration/policy.hpp"

using namespace ferry;

namespace {
RoundFacts facts(uint32_t round, uint64_t dirty, uint64_t prev, double bps = 100e6) {
    RoundFacts f;
    f.round = round;
    f.dirty_pages = dirty;
    f.prev_dirty_pages = prev;
    f.bytes_per_sec = bps;
    f.downtime_limit_ms = 300;
    f.max_rounds = 30;
    return f;
}
}  // namespace

TEST_CASE("precopy sends rounds until the rest fits the downtime limit", "[policy]") {
    // Round 0 always sends, whatever the rest.
    CHECK(next_precopy_step(facts(0, 1000, UINT64_MAX)) == PrecopyStep::SendRound);
    // 100 MB/s: 300 ms is ~7300 pages. Not fitting: another round.
    CHECK(next_precopy_step(facts(1, 100000, 200000)) == PrecopyStep::SendRound);
    // Fits and no longer halving: stop and copy.
    CHECK(next_precopy_step(facts(2, 5000, 6000)) == PrecopyStep::StopAndCopy);
    // Fits but still halving: one more round shrinks the pause.
    CHECK(next_precopy_step(facts(2, 5000, 20000)) == PrecopyStep::SendRound);
    // Nothing dirty: stop.
    CHECK(next_precopy_step(facts(3, 0, 10)) == PrecopyStep::StopAndCopy);
    // Unknown bandwidth never fits (except an empty rest).
    CHECK(next_precopy_step(facts(3, 10, 1000, 0)) == PrecopyStep::SendRound);
}

TEST_CASE("precopy alone fails at max-rounds; hybrid switches instead", "[policy]") {
    auto f = facts(30, 100000, 100000);
    CHECK(next_precopy_step(f) == PrecopyStep::FailNotConverging);
    f.postcopy_allowed = true;  // postcopy-ram without auto: still precopy's rules
    CHECK(next_precopy_step(f) == PrecopyStep::FailNotConverging);
    f.postcopy_auto = true;
    CHECK(next_precopy_step(f) == PrecopyStep::SwitchToPostcopy);
}

TEST_CASE("hybrid switches when a round stops halving the dirty set", "[policy]") {
    auto f = facts(2, 100000, 150000);
    f.postcopy_allowed = f.postcopy_auto = true;
    CHECK(next_precopy_step(f) == PrecopyStep::SwitchToPostcopy);
    f.prev_dirty_pages = 250000;  // still halving: keep going
    CHECK(next_precopy_step(f) == PrecopyStep::SendRound);
    f = facts(1, 100000, 100000);  // round 1 compares with round 0 (everything): too early
    f.postcopy_allowed = f.postcopy_auto = true;
    CHECK(next_precopy_step(f) == PrecopyStep::SendRound);
    f = facts(2, 100, 150);  // fits: stop and copy beats a switch
    f.postcopy_allowed = f.postcopy_auto = true;
    CHECK(next_precopy_step(f) == PrecopyStep::StopAndCopy);
}

TEST_CASE("migrate-start-postcopy switches at once, only when postcopy is allowed", "[policy]") {
    auto f = facts(0, 1000, UINT64_MAX);
    f.postcopy_requested = true;
    CHECK(next_precopy_step(f) == PrecopyStep::SendRound);
    f.postcopy_allowed = true;
    CHECK(next_precopy_step(f) == PrecopyStep::SwitchToPostcopy);
    CHECK(expected_downtime_ms(25600, 100e6) == Approx(1048.576));
    CHECK(expected_downtime_ms(10, 0) == 0);
}

TEST_CASE("the page cursor walks unsent pages from where it jumped, wrapping", "[policy]") {
    AtomicBitmap sent(200);
    PageCursor c(sent);
    for (uint64_t i = 0; i < 200; i += 2) sent.set(i);  // the even pages went already
    CHECK(sent.count() == 100);
    c.jump(150);
    auto p = c.next();
    REQUIRE(p);
    CHECK(*p == 151);
    std::vector<uint64_t> order;
    while (auto q = c.next()) {
        order.push_back(*q);
        sent.set(*q);
        c.jump(*q + 1);
    }
    REQUIRE(order.size() == 100);
    CHECK(order.front() == 151);
    CHECK(order[24] == 199);
    CHECK(order[25] == 1);  // wrapped
    CHECK(order.back() == 149);
    CHECK(sent.count() == 200);
    CHECK_FALSE(c.next());
    c.jump(1000);  // outside: back to the start
    CHECK(c.position() == 0);
    CHECK(sent.next_clear(0) == 200);
    CHECK_FALSE(sent.clear(5) == false);
    CHECK(sent.next_clear(0) == 5);
}

TEST_CASE("a page index maps pages of several regions to addresses and back", "[policy]") {
    std::vector<uint8_t> a(8 * 4096), b(4 * 4096);
    GuestMemory mem;
    REQUIRE(mem.add_region(Gpa(0), MmapRegion::borrowed(a.data(), a.size())));
    REQUIRE(mem.add_region(Gpa(1ull << 32), MmapRegion::borrowed(b.data(), b.size())));
    PageIndex idx(mem);
    CHECK(idx.total() == 12);
    CHECK(idx.page_of(0x1000) == 1);
    CHECK(idx.page_of((1ull << 32) + 0x2000) == 10);
    CHECK_FALSE(idx.page_of(8 * 4096));  // the hole
    CHECK(idx.gpa_of(10) == (1ull << 32) + 0x2000);
    CHECK(idx.locate(9) == std::pair<uint32_t, uint64_t>{1, 1});
    CHECK(idx.first_page(1) == 8);
}
