#include "migration/postcopy_incoming.hpp"
#include "base/seccomp.hpp"

#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fmt/format.h>

#include "base/log.hpp"
#include "memory/report.hpp"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

namespace ferry {

namespace {
uint64_t thp_bytes(const GuestMemory& mem) {
    auto r = memory_report(mem, ReportOptions{.max_node_samples = 1});
    if (!r) return 0;
    uint64_t n = 0;
    for (const auto& reg : r->regions) n += reg.thp_bytes;
    return n;
}
}  // namespace

PostcopyIncoming::PostcopyIncoming(Machine& m, Channel& ch, Userfault uffd, const PageIndex& index, AtomicBitmap& received)
    : m_(m), ch_(&ch), uffd_(std::move(uffd)), stop_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)), index_(index), received_(received),
      requested_(index.total()), lazy_zero_(index.total()), received_count_(received.count()),
      unit_(m.config().backend == Backend::Hugetlbfs ? kHugePageSize / kPageSize : 1) {}

PostcopyIncoming::~PostcopyIncoming() { abort(); }

std::pair<uint64_t, uint64_t> PostcopyIncoming::unit_of(uint32_t region, uint64_t index) const {
    uint64_t npages = m_.memory().regions()[region].size() / kPageSize;
    uint64_t start = index - index % unit_;
    return {index_.first_page(region) + start, std::min(unit_, npages - start)};
}

// Whatever is not here must fault: drop it (a page never written is not backed
// anyway; THP may have backed a neighbour of a page precopy wrote). On hugetlbfs a
// 2 MiB page is here only when all of it is: the rest of it comes again (the source
// rounds the same way).
Result<void> PostcopyIncoming::drop_missing() {
    const auto& regions = m_.memory().regions();
    for (uint32_t ri = 0; ri < regions.size(); ++ri) {
        const auto& region = regions[ri];
        uint64_t npages = region.size() / kPageSize, first = index_.first_page(ri);
        int advice = region.map.backend() == Backend::Anonymous ? MADV_DONTNEED : MADV_REMOVE;
        auto whole = [&](uint64_t u) {  // the unit at region page u is wholly here
            uint64_t n = std::min(unit_, npages - u);
            for (uint64_t i = 0; i < n; ++i)
                if (!received_.test(first + u + i)) return false;
            return true;
        };
        for (uint64_t u = 0; u < npages;) {
            if (whole(u)) {
                u += std::min(unit_, npages - u);
                continue;
            }
            uint64_t start = u;
            while (u < npages && !whole(u)) u += std::min(unit_, npages - u);
            for (uint64_t i = start; i < u; ++i) received_.clear(first + i);
            if (::madvise(region.map.addr() + start * kPageSize, (u - start) * kPageSize, advice) != 0)
                return fail_errno(Domain::Migration, advice == MADV_REMOVE ? "postcopy: MADV_REMOVE" : "postcopy: MADV_DONTNEED");
        }
    }
    received_count_ = received_.count();
    return {};
}

Result<void> PostcopyIncoming::prepare() {
    if (!stop_.valid()) return fail_errno(Domain::Migration, "eventfd");
    const auto& regions = m_.memory().regions();
    if (auto ok = drop_missing(); !ok) return ok;
    for (const auto& r : regions)
        if (auto ok = uffd_.register_missing(r.map.addr(), r.size()); !ok) return ok;
    registered_ = true;
    size_t n = m_.vcpu_count();
    vcpu_blocked_on_.assign(n, -1);
    vcpu_blocked_since_.assign(n, Clock::time_point{});
    vcpu_blocktime_.assign(n, Clock::duration{});
    start_ = Clock::now();
    thread_ = std::thread([this] { fault_loop(); });
    return {};
}

void PostcopyIncoming::fault_loop() {
    if (auto ok = seccomp::confine_this_thread(seccomp::ThreadKind::Migration); !ok) logger("mig")->error("{}", ok.error().message());
    auto log = logger("mig");
    const auto& regions = m_.memory().regions();
    uffd_msg msgs[64];
    std::vector<PageRun> ask;
    for (;;) {
        pollfd fds[2] = {{uffd_.fd(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
        int r = ::poll(fds, 2, -1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 || (fds[1].revents & POLLIN)) return;
        ssize_t got = ::read(uffd_.fd(), msgs, sizeof(msgs));
        if (got < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            log->error("postcopy: reading the userfaultfd: {}", std::strerror(errno));
            return;
        }
        auto now = Clock::now();
        ask.clear();
        {
            std::lock_guard lock(mu_);
            if (vcpu_tids_.empty() || std::ranges::find(vcpu_tids_, 0) != vcpu_tids_.end()) vcpu_tids_ = m_.vcpu_thread_ids();
            for (size_t i = 0; i < static_cast<size_t>(got) / sizeof(uffd_msg); ++i) {
                if (msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;
                uint64_t addr = msgs[i].arg.pagefault.address & ~(kPageSize - 1);
                // The unit (page, or 2 MiB page on hugetlbfs) holding the address.
                std::optional<uint64_t> page;
                uint64_t unit_pages = 1;
                uint8_t* unit_host = nullptr;
                for (uint32_t ri = 0; ri < regions.size(); ++ri) {
                    auto base = reinterpret_cast<uint64_t>(regions[ri].map.addr());
                    if (addr < base || addr - base >= regions[ri].size()) continue;
                    auto [first, n] = unit_of(ri, (addr - base) / kPageSize);
                    page = first;
                    unit_pages = n;
                    unit_host = regions[ri].map.addr() + (first - index_.first_page(ri)) * kPageSize;
                }
                if (!page) continue;
                stats_.faults++;
                if (lazy_zero_.test(*page)) {  // known to be zero: served here, no request
                    auto placed = uffd_.zeropage(unit_host, kPageSize);
                    if (!placed && placed.error().err == EEXIST) (void)uffd_.wake(unit_host, kPageSize);
                    lazy_zero_.clear(*page);
                    stats_.local_zero++;
                    auto lat = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - now).count();
                    stats_.latencies_us.push_back(static_cast<uint32_t>(lat));
                    continue;
                }
                if (received_.test(*page)) {
                    (void)uffd_.wake(unit_host, unit_pages * kPageSize);  // placed meanwhile
                    continue;
                }
                waiting_.try_emplace(*page, now);
                if (uffd_.has_thread_id()) {
                    auto tid = static_cast<pid_t>(msgs[i].arg.pagefault.feat.ptid);
                    for (size_t v = 0; v < vcpu_tids_.size() && v < vcpu_blocked_on_.size(); ++v) {
                        if (vcpu_tids_[v] != tid || vcpu_blocked_on_[v] >= 0) continue;
                        vcpu_blocked_on_[v] = static_cast<int64_t>(*page);
                        vcpu_blocked_since_[v] = now;
                        if (++blocked_vcpus_ == vcpu_blocked_on_.size()) all_blocked_since_ = now;
                    }
                }
                if (!requested_.set(*page)) {
                    for (uint64_t i = 1; i < unit_pages; ++i) requested_.set(*page + i);
                    stats_.requests++;
                    ask.push_back({index_.gpa_of(*page), static_cast<uint32_t>(unit_pages)});
                }
            }
        }
        if (!ask.empty()) send_requests(ask);
    }
}

// Asks on the current connection, if any. A failed send leaves the pages requested:
// the connection is broken, and ask_waiting() asks again once it is recovered.
void PostcopyIncoming::send_requests(const std::vector<PageRun>& ask) {
    std::lock_guard lock(ch_mu_);
    if (!ch_) return;
    if (auto ok = send_section(*ch_, SectionKind::PageRequest, 0, encode_page_runs(ask)); !ok) {
        logger("mig")->warn("postcopy: cannot ask the source for pages: {}", ok.error().message());
        ch_ = nullptr;
    }
}

void PostcopyIncoming::set_channel(Channel* ch) {
    std::lock_guard lock(ch_mu_);
    ch_ = ch;
}

Result<void> PostcopyIncoming::ask_waiting() {
    std::vector<PageRun> ask;
    {
        std::lock_guard lock(mu_);
        for (const auto& [page, since] : waiting_) {
            auto [r, idx] = index_.locate(page);
            auto [first, n] = unit_of(r, idx);
            ask.push_back({index_.gpa_of(first), static_cast<uint32_t>(n)});
        }
    }
    for (size_t i = 0; i < ask.size(); i += kMaxRunsPerSection) {
        std::vector<PageRun> part(ask.begin() + static_cast<ptrdiff_t>(i),
                                  ask.begin() + static_cast<ptrdiff_t>(std::min(ask.size(), i + kMaxRunsPerSection)));
        std::lock_guard lock(ch_mu_);
        if (!ch_) return fail(Domain::Migration, "postcopy: no connection to ask for pages on");
        if (auto ok = send_section(*ch_, SectionKind::PageRequest, 0, encode_page_runs(part)); !ok) return ok;
    }
    if (!ask.empty()) logger("mig")->info("postcopy: asked again for {} page(s) faults wait for", ask.size());
    return {};
}

Result<void> PostcopyIncoming::place(const DecodedPage& p) {
    uint64_t page = index_.first_page(p.region) + p.index;
    if (received_.test(page)) return fail(Domain::Migration, fmt::format("postcopy: page {:#x} was sent twice", p.gpa));
    if (batch_instance_ == kRamAnswer && !requested_.test(page))
        return fail(Domain::Migration, fmt::format("postcopy: the source answered page {:#x}, which was never requested", p.gpa));
    if (unit_ > 1) return stage(p, page);
    // Consecutive zero pages go in with one UFFDIO_ZEROPAGE.
    if (!p.data && zero_run_pages_ && page == zero_run_first_ + zero_run_pages_ && p.host == zero_run_host_ + zero_run_pages_ * kPageSize) {
        ++zero_run_pages_;
        return {};
    }
    if (auto ok = end_batch(); !ok) return ok;
    if (!p.data) {
        zero_run_first_ = page;
        zero_run_host_ = p.host;
        zero_run_pages_ = 1;
        return {};
    }
    if (auto ok = uffd_.copy(p.host, p.data, kPageSize); !ok) return ok;
    mark_placed(page, 1);
    return {};
}

Result<void> PostcopyIncoming::stage(const DecodedPage& p, uint64_t page) {
    // Not a structured binding: clang 14 (the fuzz build) cannot capture one in a lambda.
    const auto unit = unit_of(p.region, p.index);
    const auto first = unit.first;
    const auto n = unit.second;
    auto it = std::ranges::find_if(staged_, [&](const Staged& s) { return s.first == first; });
    if (it == staged_.end()) {
        if (staged_.size() == kMaxStaged)
            return fail(Domain::Migration, fmt::format("postcopy: more than {} huge pages partly sent at once (page {:#x}); the "
                                                       "source must send each 2 MiB page whole", kMaxStaged, p.gpa));
        Staged s;
        s.first = first;
        s.host = p.host - (page - first) * kPageSize;
        s.bits.assign((n + 63) / 64, 0);
        s.buf.assign(n * kPageSize, 0);
        staged_.push_back(std::move(s));
        it = staged_.end() - 1;
    }
    uint64_t i = page - first;
    if (it->bits[i / 64] & (1ull << (i % 64))) return fail(Domain::Migration, fmt::format("postcopy: page {:#x} was sent twice", p.gpa));
    it->bits[i / 64] |= 1ull << (i % 64);
    if (p.data) std::memcpy(it->buf.data() + i * kPageSize, p.data, kPageSize);
    if (++it->have < n) return {};
    auto ok = uffd_.copy(it->host, it->buf.data(), n * kPageSize);
    staged_.erase(it);
    if (!ok) return ok;
    mark_placed(first, n);
    return {};
}

// A run of zero pages: those a fault waits for are placed now (UFFDIO_ZEROPAGE); the
// others are only noted (lazy zero): the fault thread places one if the guest touches
// it, and whatever is never touched needs nothing, since a page still missing when
// userfaultfd lets go of guest RAM reads as zero. Most of a large guest is zero: placing
// it all would hold up the pages behind it in the stream.
Result<void> PostcopyIncoming::end_batch() {
    if (!zero_run_pages_) return {};
    uint64_t first = zero_run_first_, n = zero_run_pages_;
    uint8_t* host = zero_run_host_;
    zero_run_pages_ = 0;
    std::vector<std::pair<uint64_t, uint64_t>> now;  // (offset, pages) in the run
    {
        std::lock_guard lock(mu_);  // decided against the fault thread's view
        for (uint64_t i = 0; i < n; ++i) {
            if (requested_.test(first + i)) {
                if (!now.empty() && now.back().first + now.back().second == i) ++now.back().second;
                else now.emplace_back(i, 1);
                continue;
            }
            lazy_zero_.set(first + i);
            received_.set(first + i);
            ++received_count_;
        }
    }
    for (auto [off, len] : now) {
        if (auto ok = uffd_.zeropage(host + off * kPageSize, len * kPageSize); !ok) return ok;
        mark_placed(first + off, len);
    }
    return {};
}

void PostcopyIncoming::mark_placed(uint64_t first, uint64_t n) {
    for (uint64_t i = 0; i < n; ++i) received_.set(first + i);
    received_count_ += n;
    auto now = Clock::now();
    std::lock_guard lock(mu_);
    for (uint64_t i = 0; i < n; ++i) on_placed(first + i, now);
}

void PostcopyIncoming::on_placed(uint64_t page, Clock::time_point now) {
    if (auto it = waiting_.find(page); it != waiting_.end()) {
        auto lat = std::chrono::duration_cast<std::chrono::microseconds>(now - it->second).count();
        stats_.latencies_us.push_back(static_cast<uint32_t>(std::min<int64_t>(lat, UINT32_MAX)));
        if (stats_.series.size() < kMaxFaultSeries)
            stats_.series.push_back({static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(it->second - start_).count()),
                                     index_.gpa_of(page), static_cast<uint32_t>(std::min<int64_t>(lat, UINT32_MAX))});
        waiting_.erase(it);
    }
    for (size_t v = 0; v < vcpu_blocked_on_.size(); ++v) {
        if (vcpu_blocked_on_[v] != static_cast<int64_t>(page)) continue;
        if (blocked_vcpus_ == vcpu_blocked_on_.size()) all_blocktime_ += now - all_blocked_since_;
        vcpu_blocktime_[v] += now - vcpu_blocked_since_[v];
        vcpu_blocked_on_[v] = -1;
        --blocked_vcpus_;
    }
}

void PostcopyIncoming::stop_thread() {
    if (!thread_.joinable()) return;
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(stop_.get(), &one, sizeof(one));
    thread_.join();
}

Result<void> PostcopyIncoming::finish() {
    stop_thread();
    const auto& regions = m_.memory().regions();
    for (const auto& r : regions)
        if (auto ok = uffd_.unregister(r.map.addr(), r.size()); !ok) return ok;
    registered_ = false;
    // Pages arrived 4 KiB at a time: put huge pages back now rather than waiting for
    // khugepaged.
    bool any_thp = std::ranges::any_of(regions, [](const MemoryRegion& r) { return r.policy.thp && r.map.backend() != Backend::Hugetlbfs; });
    if (any_thp) {
        uint64_t before = thp_bytes(m_.memory());
        for (const auto& r : regions) {
            if (!r.policy.thp || r.map.backend() == Backend::Hugetlbfs) continue;
            if (::madvise(r.map.addr(), r.size(), MADV_COLLAPSE) != 0)
                logger("mig")->info("postcopy: MADV_COLLAPSE: {} (huge pages come back through khugepaged)", std::strerror(errno));
        }
        uint64_t after = thp_bytes(m_.memory());
        std::lock_guard lock(mu_);
        stats_.thp_before_bytes = before;
        stats_.thp_after_bytes = after;
    }
    return {};
}

void PostcopyIncoming::abort() {
    stop_thread();
    if (registered_) {
        for (const auto& r : m_.memory().regions()) (void)uffd_.unregister(r.map.addr(), r.size());
        registered_ = false;
    }
}

PostcopyFaultStats PostcopyIncoming::fault_stats() const {
    std::lock_guard lock(mu_);
    PostcopyFaultStats s = stats_;
    auto now = Clock::now();
    auto ms = [](Clock::duration d) { return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()); };
    s.vcpu_blocktime_ms.clear();
    for (size_t v = 0; v < vcpu_blocktime_.size(); ++v)
        s.vcpu_blocktime_ms.push_back(ms(vcpu_blocktime_[v] + (vcpu_blocked_on_[v] >= 0 ? now - vcpu_blocked_since_[v] : Clock::duration{})));
    s.blocktime_ms = ms(all_blocktime_ + (blocked_vcpus_ && blocked_vcpus_ == vcpu_blocked_on_.size() ? now - all_blocked_since_ : Clock::duration{}));
    return s;
}

}  // namespace ferry
