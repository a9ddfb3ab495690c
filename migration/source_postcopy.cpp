// The source's postcopy phase (MigrationSource, migration/source.hpp): the switch
// (pause, discard list, state, Go) and the service that follows: page requests first,
// the background stream between them.
#include <fmt/format.h>

#include <algorithm>
#include <thread>

#include "base/log.hpp"
#include "base/seccomp.hpp"
#include "memory/residency.hpp"
#include "migration/source.hpp"
#include "migration/stream.hpp"

namespace ferry {

namespace {
// Background batches are small so that a request waits behind little: 16 pages.
constexpr uint32_t kBackgroundPages = 16;
// And little may queue in the socket unsent (TCP_NOTSENT_LOWAT).
constexpr uint32_t kUnsentLimit = 128 * 1024;
// How long the destination may take to confirm the last page (the pages it still
// places): x-stall-timeout, at least this.
constexpr auto kDoneTimeout = std::chrono::seconds(2);

}  // namespace

Result<void> MigrationSource::switch_to_postcopy(std::vector<std::vector<uint64_t>>& dirty) {
    set_status(MigrationStatus::Device);
    paused_at_ = std::chrono::steady_clock::now();
    we_paused_ = m_.pause_for_migration();
    // Everything dirtied since it was sent must come again: the destination drops it
    // and faults on it.
    if (auto ok = dirty_->sync(dirty); !ok) return ok;
    if (auto ok = send_discards(dirty); !ok) return ok;
    dirty_->stop();  // the guest stays paused here from now on
    if (auto ok = send_state(); !ok) return ok;
    if (auto ok = wait_ready_and_go(); !ok) return ok;
    stats_.update([&](MigrationStats& s) { s.postcopy_switched = true; });
    set_status(MigrationStatus::PostcopyActive);
    logger("mig")->info("postcopy: {} of {} pages still to send", index_.total() - sent_->count(), index_.total());
    return serve_postcopy();
}

Result<void> MigrationSource::send_discards(const std::vector<std::vector<uint64_t>>& dirty) {
    std::vector<PageRun> runs;
    auto flush = [&]() -> Result<void> {
        if (runs.empty()) return {};
        auto payload = encode_page_runs(runs);
        runs.clear();
        return send_section(*ch_, SectionKind::Discard, 0, payload);
    };
    const auto& regions = m_.memory().regions();
    for (size_t ri = 0; ri < regions.size(); ++ri) {
        uint64_t npages = regions[ri].size() / kPageSize;
        const auto& bits = dirty[ri];
        uint64_t first = index_.first_page(static_cast<uint32_t>(ri));
        for (uint64_t p = 0; p < npages;) {
            if (!(bits[p / 64] & (1ull << (p % 64)))) {
                ++p;
                continue;
            }
            uint64_t start = p;
            while (p < npages && (bits[p / 64] & (1ull << (p % 64))) && p - start < UINT32_MAX) sent_->clear(first + p++);
            runs.push_back({regions[ri].start.raw() + start * kPageSize, static_cast<uint32_t>(p - start)});
            if (runs.size() == kMaxRunsPerSection)
                if (auto ok = flush(); !ok) return ok;
        }
        // A destination that places 2 MiB pages keeps only those wholly sent: the rest
        // of a partly sent one goes again (the destination rounds the same way).
        for (uint64_t u = 0; unit_pages_ > 1 && u < npages; u += unit_pages_) {
            uint64_t n = std::min(unit_pages_, npages - u), have = 0;
            for (uint64_t i = 0; i < n; ++i) have += sent_->test(first + u + i);
            if (have == 0 || have == n) continue;
            for (uint64_t i = 0; i < n; ++i) sent_->clear(first + u + i);
            runs.push_back({regions[ri].start.raw() + u * kPageSize, static_cast<uint32_t>(n)});
            if (runs.size() == kMaxRunsPerSection)
                if (auto ok = flush(); !ok) return ok;
        }
    }
    return flush();
}

std::pair<uint64_t, uint64_t> MigrationSource::unit_of(uint64_t page) const {
    if (unit_pages_ == 1) return {page, 1};
    auto [r, idx] = index_.locate(page);
    uint64_t npages = m_.memory().regions()[r].size() / kPageSize, start = idx - idx % unit_pages_;
    return {page - (idx - start), std::min(unit_pages_, npages - start)};
}

Result<void> MigrationSource::add_unit(PostcopyBatch& b, uint64_t page, uint32_t instance, uint64_t& sent_pages, Channel& ch) {
    auto [first, n] = unit_of(page);
    for (uint64_t p = first; p < first + n; ++p) {
        if (sent_->set(p)) continue;  // already on its way
        add_page(b, p);
        if (b.entries.size() == kMaxBatchPages) {
            if (auto ok = send_pages(b, instance, ch); !ok) return ok;
            sent_pages += b.entries.size();
            b.clear();
        }
    }
    return {};
}

Result<void> MigrationSource::connect_urgent_channel(uint64_t token) {
    auto ch = Channel::connect(to_, params().timeouts.setup, params().tls);
    if (!ch) return fail(Domain::Migration, "the second (postcopy-preempt) connection: " + ch.error().message());
    if (auto ok = send_section(*ch, SectionKind::UrgentHello, 0, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&token), sizeof(token)));
        !ok)
        return ok;
    std::lock_guard lock(ch_mu_);
    urgent_ = std::make_unique<Channel>(std::move(*ch));
    if (cancelled()) return fail(Domain::Migration, "cancelled");
    return {};
}

void MigrationSource::PostcopyBatch::clear() {
    entries.clear();
    data.clear();
}

// Adds a global page, read where it lies in guest RAM (the guest is paused here, so
// it cannot change before the send); returns whether it carries data. A page the host
// never backed is zero without being read: reading it would fault it in.
bool MigrationSource::add_page(PostcopyBatch& b, uint64_t page) {
    auto [r, idx] = index_.locate(page);
    const auto& region = m_.memory().regions()[r];
    const uint8_t* host = region.map.addr() + idx * kPageSize;
    uint64_t gpa = region.start.raw() + idx * kPageSize;
    uint64_t chunk = idx / kResidencyChunk * kResidencyChunk;
    if (r != b.backed_region || chunk != b.backed_first) {
        b.backed_region = r;
        b.backed_first = chunk;
        b.backed = backed_pages(region, chunk, std::min<uint64_t>(kResidencyChunk, region.size() / kPageSize - chunk));
    }
    uint64_t rel = idx - chunk;
    bool backed = b.backed[rel / 64] & (1ull << (rel % 64));
    if (!backed || page_is_zero(host)) {
        b.entries.push_back(gpa | kPageFlagZero);
        return false;
    }
    b.entries.push_back(gpa | kPageFlagData);
    b.data.emplace_back(host, kPageSize);
    return true;
}

// Sends the batch as one RAM batch section, its data pages straight from guest RAM.
Result<void> MigrationSource::send_pages(const PostcopyBatch& b, uint32_t instance, Channel& ch) {
    if (b.entries.empty()) return {};
    uint32_t count = static_cast<uint32_t>(b.entries.size());
    std::vector<std::span<const uint8_t>> pieces;
    pieces.reserve(b.data.size() + 2);
    pieces.emplace_back(reinterpret_cast<const uint8_t*>(&count), 4);
    pieces.emplace_back(reinterpret_cast<const uint8_t*>(b.entries.data()), b.entries.size() * 8);
    pieces.insert(pieces.end(), b.data.begin(), b.data.end());
    auto before = ch.bytes_sent();
    if (auto ok = send_section(ch, SectionKind::RamBatch, instance, pieces); !ok) {
        io_broke_ = true;
        return ok;
    }
    uint64_t sent = ch.bytes_sent() - before;
    if (&ch == ch_.get()) round_bytes_ += sent;  // the migration thread's own count (pacing)
    uint64_t data = b.data.size(), zero = b.entries.size() - b.data.size();
    stats_.update([&](MigrationStats& s) {
        s.ram_transferred += sent;
        s.ram_normal += data;
        s.ram_normal_bytes += data * kPageSize;
        s.ram_duplicate += zero;
        s.ram_remaining = (index_.total() - sent_->count()) * kPageSize;
    });
    return {};
}

// How long the background stream must wait to stay under max-postcopy-bandwidth (0: go on).
std::chrono::milliseconds MigrationSource::background_pace() const {
    uint64_t cap = params().max_postcopy_bandwidth;
    if (cap == 0) return std::chrono::milliseconds(0);
    auto due = round_start_ + std::chrono::duration_cast<Clock::duration>(
                                  std::chrono::duration<double>(static_cast<double>(round_bytes_) / static_cast<double>(cap)));
    auto now = Clock::now();
    if (now >= due) return std::chrono::milliseconds(0);
    return std::chrono::ceil<std::chrono::milliseconds>(due - now);
}

// Sends the pages of these requests (those not sent yet) as answers on `ch`; returns
// the page after the last one asked for.
Result<uint64_t> MigrationSource::answer(const std::deque<uint64_t>& requests, PostcopyBatch& batch, Channel& ch) {
    batch.clear();
    uint64_t n = 0, after = 0;
    for (uint64_t gpa : requests) {
        auto page = index_.page_of(gpa);
        if (!page) return fail(Domain::Migration, fmt::format("the destination asked for {:#x}, outside guest RAM", gpa));
        if (auto ok = add_unit(batch, *page, kRamAnswer, n, ch); !ok) return std::unexpected(ok.error());
        after = *page + 1;
    }
    if (auto ok = send_pages(batch, kRamAnswer, ch); !ok) return std::unexpected(ok.error());
    n += batch.entries.size();
    uint64_t total = answered_ += n;
    stats_.update([&](MigrationStats& s) { s.postcopy_requests = total; });
    return after;
}

void MigrationSource::answer_loop() {
    if (auto ok = seccomp::confine_this_thread(seccomp::ThreadKind::Migration); !ok) logger("mig")->error("{}", ok.error().message());
    PostcopyBatch batch;
    while (!answers_stop_) {
        auto requests = back_->take_requests(std::chrono::milliseconds(50));
        if (requests.empty()) continue;
        auto after = answer(requests, batch, *urgent_);
        if (!after) {
            std::lock_guard lock(answer_mu_);
            answer_error_ = after.error().message();
            return;
        }
        jump_to_ = static_cast<int64_t>(*after);
    }
}

Result<void> MigrationSource::serve_postcopy() {
    for (;;) {
        bool recoverable = false;
        auto ok = stream_postcopy(recoverable);
        if (ok) break;
        // Whether the destination runs the guest: it said resumed, or asked for pages.
        if ((back_ && back_->events().resumed_at) || answered_ > 0) dest_runs_ = true;
        if (!recoverable || cancelled()) return ok;
        if (auto r = recover_postcopy(ok.error().message()); !r) return r;
    }
    auto resumed = back_->events().resumed_at;
    if (!resumed) resumed = dest_resumed_at_;
    auto end = Clock::now();
    stats_.update([&](MigrationStats& s) {
        if (resumed) s.downtime_ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(*resumed - paused_at_).count());
        s.ram_remaining = 0;
        s.postcopy_requests = answered_;
        auto secs = std::chrono::duration<double>(end - round_start_).count();
        if (secs > 0 && round_bytes_ >= (1u << 20)) s.mbps = static_cast<double>(round_bytes_) * 8 / secs / 1e6;
    });
    logger("mig")->info("postcopy complete: {} pages answered on request, downtime {} us", answered_.load(),
                        resumed ? std::chrono::duration_cast<std::chrono::microseconds>(*resumed - paused_at_).count() : -1);
    m_.set_postmigrate();
    return {};
}

Result<void> MigrationSource::stream_postcopy(bool& recoverable) {
    // One connection: little may queue ahead of an answer. With a second connection for
    // the answers (postcopy-preempt) the background stream fills its own pipe.
    if (!urgent_) (void)ch_->set_unsent_limit(kUnsentLimit);
    PageCursor cursor(*sent_);
    PostcopyBatch batch;
    round_start_ = Clock::now();
    round_bytes_ = 0;
    std::optional<Clock::time_point> all_sent_at;
    std::thread answers;
    if (urgent_) answers = std::thread([this] { answer_loop(); });
    struct Joiner {
        std::atomic<bool>& stop;
        std::thread& t;
        ~Joiner() {
            stop = true;
            if (t.joinable()) t.join();
        }
    } joiner{answers_stop_, answers};
    // A failure of a connection (closed, reset, stalled, a bad checksum, a send that
    // failed) can be recovered; the destination's own error or a bad request cannot.
    auto broke = [&](Result<void> r) {
        recoverable = io_broke_;
        return r;
    };
    for (;;) {
        if (cancelled()) return fail(Domain::Migration, "cancelled after the switch-over");
        auto ev = back_->events();
        if (!ev.error.empty()) {
            recoverable = ev.connection_broke;
            return fail(Domain::Migration, ev.error);
        }
        bool all_sent = sent_->count() == index_.total();
        // max-postcopy-bandwidth paces the background stream; a request ends the wait at once.
        auto pace = background_pace();
        auto wait = all_sent ? std::chrono::milliseconds(100) : pace;
        if (urgent_) {
            {
                std::lock_guard lock(answer_mu_);
                if (!answer_error_.empty()) return broke(fail(Domain::Migration, answer_error_));
            }
            // The background stream goes on from the last fault: the guest's locality.
            if (auto j = jump_to_.exchange(-1); j >= 0) cursor.jump(static_cast<uint64_t>(j));
            if (wait.count() > 0) back_->wait([](const ReturnPath::Events& e) { return e.postcopy_done; }, wait);
        } else {
            // Urgent first: the pages a fault waits for, each sent once.
            auto requests = back_->take_requests(wait);
            if (!requests.empty()) {
                auto after = answer(requests, batch, *ch_);
                if (!after) return broke(std::unexpected(after.error()));
                cursor.jump(*after);  // the guest's locality
                continue;
            }
        }
        if (all_sent) {
            // The source keeps its copy until the destination confirms every page.
            if (back_->events().postcopy_done) break;
            if (!all_sent_at) all_sent_at = Clock::now();
            if (Clock::now() - *all_sent_at > std::max<Clock::duration>(params().timeouts.stall, kDoneTimeout)) {
                recoverable = true;  // stalled: a recovery learns what arrived
                return fail(Domain::Migration, "the destination did not confirm that it has every page");
            }
            continue;
        }
        if (background_pace().count() > 0) continue;  // woken early: keep pacing
        // Background: the next unsent pages from the cursor, at most kBackgroundPages
        // of them with data (zero pages cost 8 bytes each: up to a full batch), or one
        // whole 2 MiB page where the destination places those.
        batch.clear();
        uint64_t pushed = 0;
        while (batch.entries.size() < kMaxBatchPages && batch.data.size() < kBackgroundPages) {
            auto page = cursor.next();
            if (!page) break;
            auto [first, n] = unit_of(*page);
            if (auto ok = add_unit(batch, *page, kRamPushed, pushed, *ch_); !ok) return broke(ok);
            cursor.jump(first + n);
            if (n > 1 || pushed > 0) break;  // a whole 2 MiB page, or a full batch went out: look for requests
        }
        if (auto ok = send_pages(batch, kRamPushed, *ch_); !ok) return broke(ok);
    }
    return {};
}

}  // namespace ferry
