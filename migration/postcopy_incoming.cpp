#include "migration/postcopy_incoming.hpp"

#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
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
    : m_(m), ch_(ch), uffd_(std::move(uffd)), stop_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)), index_(index), received_(received),
      requested_(index.total()), received_count_(received.count()) {}

PostcopyIncoming::~PostcopyIncoming() { abort(); }

Result<void> PostcopyIncoming::prepare() {
    if (!stop_.valid()) return fail_errno(Domain::Migration, "eventfd");
    const auto& regions = m_.memory().regions();
    // Whatever is not here must fault: drop it (a page never written is not backed
    // anyway; THP may have backed a neighbour of a page precopy wrote).
    for (uint32_t ri = 0; ri < regions.size(); ++ri) {
        uint64_t npages = regions[ri].size() / kPageSize, first = index_.first_page(ri);
        for (uint64_t p = 0; p < npages;) {
            if (received_.test(first + p)) {
                ++p;
                continue;
            }
            uint64_t start = p;
            while (p < npages && !received_.test(first + p)) ++p;
            if (::madvise(regions[ri].map.addr() + start * kPageSize, (p - start) * kPageSize, MADV_DONTNEED) != 0)
                return fail_errno(Domain::Migration, "postcopy: MADV_DONTNEED");
        }
    }
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
                std::optional<uint64_t> page;
                for (uint32_t ri = 0; ri < regions.size(); ++ri) {
                    auto base = reinterpret_cast<uint64_t>(regions[ri].map.addr());
                    if (addr >= base && addr - base < regions[ri].size()) page = index_.first_page(ri) + (addr - base) / kPageSize;
                }
                if (!page) continue;
                stats_.faults++;
                if (received_.test(*page)) {
                    (void)uffd_.wake(reinterpret_cast<uint8_t*>(addr), kPageSize);  // placed meanwhile
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
                    stats_.requests++;
                    ask.push_back({index_.gpa_of(*page), 1});
                }
            }
        }
        if (!ask.empty()) {
            if (auto ok = send_section(ch_, SectionKind::PageRequest, 0, encode_page_runs(ask)); !ok) {
                log->error("postcopy: cannot ask the source for pages: {}", ok.error().message());
                return;
            }
        }
    }
}

Result<void> PostcopyIncoming::place(const DecodedPage& p) {
    uint64_t page = index_.first_page(p.region) + p.index;
    if (received_.test(page)) return fail(Domain::Migration, fmt::format("postcopy: page {:#x} was sent twice", p.gpa));
    if (batch_instance_ == kRamAnswer && !requested_.test(page))
        return fail(Domain::Migration, fmt::format("postcopy: the source answered page {:#x}, which was never requested", p.gpa));
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

Result<void> PostcopyIncoming::end_batch() {
    if (!zero_run_pages_) return {};
    uint64_t n = zero_run_pages_;
    zero_run_pages_ = 0;
    if (auto ok = uffd_.zeropage(zero_run_host_, n * kPageSize); !ok) return ok;
    mark_placed(zero_run_first_, n);
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
