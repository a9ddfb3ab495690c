// The postcopy destination's side of guest RAM (MigrationDestination owns one):
//
//   prepare():  before the vCPUs run, drops every page it does not hold (MADV_DONTNEED:
//               never received, or discarded as dirtied since it was sent), registers
//               all of guest RAM with userfaultfd (MISSING) and starts the fault thread.
//   fault thread: owns the reading of the userfaultfd (and a stop eventfd). Each fault
//               on a page not yet here is recorded (time, faulting vCPU) and, unless it
//               was asked for already, asked of the source with a page-request section.
//   place():    the receiving thread hands each arriving page to it (it is the
//               PagePlacer): UFFDIO_COPY / UFFDIO_ZEROPAGE, which wakes whoever waits
//               on the page; a page that is here already, or an answer to a request
//               never made, is refused.
//   finish():   when every page is here: stop the fault thread, unregister, and
//               collapse guest RAM back into huge pages (MADV_COLLAPSE).
//   abort():    on failure: stop the fault thread and close the userfaultfd, which
//               releases every waiting thread (the guest is not to run on).
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
    // The instance of the batch whose pages are placed next (kRamAnswer: each page must
    // have been requested).
    void set_batch_kind(uint32_t instance) { batch_instance_ = instance; }
    Result<void> place(const DecodedPage& page) override;
    Result<void> end_batch() override;  // places the zero run still pending
    bool complete() const { return received_count_ == index_.total(); }
    Result<void> finish();
    void abort();
    PostcopyFaultStats fault_stats() const;

private:
    using Clock = std::chrono::steady_clock;
    void fault_loop();
    void on_placed(uint64_t page, Clock::time_point now);  // under mu_
    void mark_placed(uint64_t first, uint64_t n);
    void stop_thread();

    Machine& m_;
    Channel& ch_;
    Userfault uffd_;
    Fd stop_;
    const PageIndex& index_;
    AtomicBitmap& received_;
    AtomicBitmap requested_;
    uint64_t received_count_ = 0;  // the receiving thread's own count
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
