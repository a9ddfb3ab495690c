// The postcopy destination's side of guest RAM (MigrationDestination owns one):
//
//   prepare():  before the vCPUs run, drops every page it does not hold (never received,
//               or discarded as dirtied since it was sent: MADV_DONTNEED for anonymous
//               RAM, MADV_REMOVE for memfd and hugetlbfs, whose page cache keeps what is
//               only unmapped; hugetlbfs drops each 2 MiB page not wholly here), registers
//               all of guest RAM with userfaultfd (MISSING) and starts the fault thread.
//   fault thread: owns the reading of the userfaultfd (and a stop eventfd). Each fault
//               on a page not yet here is recorded (time, faulting vCPU) and, unless it
//               was asked for already, asked of the source with a page-request section
//               (on hugetlbfs: the whole 2 MiB page).
//   place():    the receiving thread hands each arriving page to it (it is the
//               PagePlacer): UFFDIO_COPY / UFFDIO_ZEROPAGE, which wakes whoever waits
//               on the page; a page that is here already, or an answer to a request
//               never made, is refused. On hugetlbfs the 4 KiB pages of a 2 MiB page
//               are staged until the last one is in, then placed whole (a few at a
//               time at most: the source sends each 2 MiB page in one go).
//   finish():   when every page is here: stop the fault thread, unregister, and
//               collapse guest RAM back into huge pages (MADV_COLLAPSE).
//   abort():    on failure: stop the fault thread and close the userfaultfd, which
//               releases every waiting thread (the guest is not to run on).
//   recovery:   when the connection breaks, set_channel(nullptr): the fault thread goes
//               on noting faults (vCPUs on missing pages wait) but asks nothing; a
//               failed request does the same. After a recovery, set_channel(new) and
//               ask_waiting() asks again for every page a fault waits for; forget_staged()
//               drops partly staged 2 MiB pages, which the source sends again whole.
#pragma once

#include <chrono>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "base/fd.hpp"
#include "memory/userfault.hpp"
#include "migration/channel.hpp"
#include "migration/page_set.hpp"
#include "migration/stats.hpp"
#include "migration/stream.hpp"
#include "vmm/machine.hpp"

namespace ferry {

class PostcopyIncoming final : public PagePlacer {
public:
    PostcopyIncoming(Machine& m, Channel& ch, Userfault uffd, const PageIndex& index, AtomicBitmap& received);
    ~PostcopyIncoming() override;

    Result<void> prepare();
    // The connection page requests go on (nullptr: none, while postcopy is paused).
    void set_channel(Channel* ch);
    Result<void> ask_waiting();
    void forget_staged() { staged_.clear(); }  // with the receiving threads stopped
    // The instance of the batch whose pages are placed next (kRamAnswer: each page must
    // have been requested).
    void set_batch_kind(uint32_t instance) { batch_instance_ = instance; }
    Result<void> place(const DecodedPage& page) override;
    Result<void> end_batch() override;  // places the zero run still pending
    bool complete() const { return received_count_ == index_.total(); }
    // The pages placed together: 1, or 512 (a 2 MiB page) on hugetlbfs.
    uint64_t unit_pages() const { return unit_; }
    Result<void> finish();
    void abort();
    PostcopyFaultStats fault_stats() const;

private:
    using Clock = std::chrono::steady_clock;
    void fault_loop();
    void on_placed(uint64_t page, Clock::time_point now);  // under mu_
    void mark_placed(uint64_t first, uint64_t n);
    void stop_thread();
    void send_requests(const std::vector<PageRun>& ask);
    Result<void> drop_missing();
    Result<void> stage(const DecodedPage& p, uint64_t page);  // hugetlbfs
    // The placement unit holding a page of region `region` at `index`: first global page, count.
    std::pair<uint64_t, uint64_t> unit_of(uint32_t region, uint64_t index) const;

    // A 2 MiB page being assembled (hugetlbfs).
    struct Staged {
        uint64_t first = 0;         // global page
        uint8_t* host = nullptr;    // where it goes
        uint64_t have = 0;          // pages staged
        std::vector<uint64_t> bits;
        std::vector<uint8_t> buf;
    };
    static constexpr size_t kMaxStaged = 4;

    Machine& m_;
    std::mutex ch_mu_;  // ch_ against set_channel(); held across a request's send
    Channel* ch_;
    Userfault uffd_;
    Fd stop_;
    const PageIndex& index_;
    AtomicBitmap& received_;
    AtomicBitmap requested_;
    AtomicBitmap lazy_zero_;       // zero pages noted but not placed (end_batch)
    uint64_t received_count_ = 0;  // the receiving thread's own count
    uint64_t unit_ = 1;
    std::vector<Staged> staged_;
    uint32_t batch_instance_ = kRamPushed;
    uint64_t zero_run_first_ = 0, zero_run_pages_ = 0;  // zero pages not yet placed
    uint8_t* zero_run_host_ = nullptr;
    std::thread thread_;
    bool registered_ = false;
    Clock::time_point start_;

    mutable std::mutex mu_;
    std::unordered_map<uint64_t, Clock::time_point> waiting_;  // faulted page -> first fault
    std::vector<pid_t> vcpu_tids_;
    std::vector<int64_t> vcpu_blocked_on_;  // page, or -1
    std::vector<Clock::time_point> vcpu_blocked_since_;
    size_t blocked_vcpus_ = 0;
    Clock::time_point all_blocked_since_;
    std::vector<Clock::duration> vcpu_blocktime_;
    Clock::duration all_blocktime_{};
    PostcopyFaultStats stats_;
};

}  // namespace ferry
