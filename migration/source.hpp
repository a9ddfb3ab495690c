// The sending side of a live migration. One thread sends; a reader thread
// (ReturnPath) takes what the destination sends back. Phases:
//
//   setup:   connect, send the header (asking for postcopy when it may switch), wait
//            for the destination's HeaderAck (the capabilities it accepts)
//   active:  round 0 sends every page the host ever backed that is not zero; then
//            rounds of pages from the dirty log, each chunk's bits cleared just before
//            its pages are read; after each sync the convergence policy
//            (migration/policy.hpp) says: another round, stop and copy, switch to
//            postcopy, or fail (not converging)
//   device:  pause the vCPUs; precopy: the last dirty pages; postcopy: a discard list
//            of the pages dirtied since they were sent; then vCPU/VM/device state,
//            StateEnd; wait for Ready; send Go
//   postcopy-active (source_postcopy.cpp): answer page requests first; between
//            them push the pages not yet sent, from a cursor that jumps to the last
//            requested page and wraps; then wait for PostcopyDone
//   postcopy-paused: the postcopy connection broke (closed, stalled, a bad checksum,
//            migrate-pause): every page the destination lacks is still here; resume()
//            (QMP migrate with "resume": true, after migrate-recover on the
//            destination) connects again, learns which pages arrived
//            (migration/recovery.hpp), and postcopy goes on from there
//   completed: the source stays paused (its owner exits or keeps it, --keep-source)
//
// Any failure before Go (connection lost, destination refused or died, cancel) leaves
// the source running as it was: vCPUs resumed, dirty logging off, status failed or
// cancelled with the reason. After Go the source never resumes: a postcopy that fails
// leaves it paused, failed, with the only complete copy of RAM.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>

#include "migration/channel.hpp"
#include "migration/dirty.hpp"
#include "migration/page_set.hpp"
#include "migration/return_path.hpp"
#include "migration/stats.hpp"
#include "vmm/machine.hpp"

namespace ferry {

class MigrationSource {
public:
    // Called on the migration thread at every status change.
    using StatusFn = std::function<void(MigrationStatus)>;

    MigrationSource(Machine& machine, TcpAddress to, MigrationParams params, StatusFn on_status);
    MigrationSource(const MigrationSource&) = delete;
    MigrationSource& operator=(const MigrationSource&) = delete;
    ~MigrationSource();  // cancels if still running, joins

    void start();
    void cancel();
    MigrationStats stats() const { return stats_.get(); }
    void set_params(const MigrationParams& p);
    // migrate-start-postcopy: switch at the next decision (needs params.postcopy).
    void start_postcopy() { postcopy_requested_ = true; }
    // migrate with "resume": true: recover a paused postcopy through `to`.
    Result<void> resume(const TcpAddress& to);
    // migrate-pause: breaks the postcopy connection(s) on purpose (postcopy-active).
    Result<void> pause_postcopy();
    // The destination is known to run the guest (it said resumed, or asked for pages):
    // a paused postcopy may then not be given up here.
    bool destination_runs() const { return dest_runs_; }

private:
    using Clock = std::chrono::steady_clock;
    void run();
    Result<void> migrate();
    Result<void> send_round(std::vector<std::vector<uint64_t>>& dirty, bool first, bool paused);
    Result<void> flush_batch();
    Result<void> sync_with_destination(uint32_t round);
    Result<void> send_state();
    Result<void> stop_and_copy(std::vector<std::vector<uint64_t>>& dirty);
    Result<void> wait_ready_and_go();
    // source_postcopy.cpp
    Result<void> switch_to_postcopy(std::vector<std::vector<uint64_t>>& dirty);
    Result<void> send_discards(const std::vector<std::vector<uint64_t>>& dirty);
    Result<void> serve_postcopy();
    // Until the destination has every page, or a failure (`recoverable`: the connection's).
    Result<void> stream_postcopy(bool& recoverable);
    // Paused until resume() brings a connection whose handshake is done, or cancel.
    Result<void> recover_postcopy(const std::string& why);
    Result<void> reconnect(const TcpAddress& to);
    std::chrono::milliseconds background_pace() const;
    // A postcopy RAM batch being filled (by one thread): its table, its data pages in
    // guest RAM, and which pages of one chunk the host backs (memory/residency.hpp).
    static constexpr uint64_t kResidencyChunk = 4096;
    struct PostcopyBatch {
        std::vector<uint64_t> entries;
        std::vector<std::span<const uint8_t>> data;
        uint32_t backed_region = UINT32_MAX;
        uint64_t backed_first = 0;
        std::vector<uint64_t> backed;
        void clear();
    };
    bool add_page(PostcopyBatch& b, uint64_t page);
    Result<void> send_pages(const PostcopyBatch& b, uint32_t instance, Channel& ch);
    // Adds the unsent pages of the unit holding `page` (the page; its whole 2 MiB page
    // where the destination places those), sending each full batch as `instance` on
    // `ch` at once; `sent_pages` counts the pages sent so. The unit's last pages stay in `b`.
    Result<void> add_unit(PostcopyBatch& b, uint64_t page, uint32_t instance, uint64_t& sent_pages, Channel& ch);
    Result<void> connect_urgent_channel(uint64_t token);
    // postcopy-preempt: answers page requests on the second connection until stopped.
    void answer_loop();
    Result<uint64_t> answer(const std::deque<uint64_t>& requests, PostcopyBatch& batch, Channel& ch);
    // The unit holding a page: its first global page and its length.
    std::pair<uint64_t, uint64_t> unit_of(uint64_t page) const;
    MigrationParams params() const {
        std::lock_guard lock(params_mu_);
        return params_;
    }
    void set_status(MigrationStatus s);
    void throttle();
    bool cancelled() const { return cancel_.load(); }

    Machine& m_;
    TcpAddress to_;
    mutable std::mutex params_mu_;
    MigrationParams params_;
    StatusFn on_status_;
    MigrationStatsBox stats_;
    std::atomic<bool> cancel_{false};
    std::atomic<bool> postcopy_requested_{false};
    bool we_paused_ = false;  // resume on failure only a guest this migration paused
    bool past_go_ = false;    // the destination may run the guest: never resume here
    bool postcopy_ok_ = false;  // the destination accepted postcopy
    uint64_t unit_pages_ = 1;   // sent whole in postcopy: 512 where the destination places 2 MiB pages
    Clock::time_point paused_at_;

    std::mutex ch_mu_;  // guards ch_ for cancel()
    std::unique_ptr<Channel> ch_;
    std::unique_ptr<Channel> urgent_;  // postcopy-preempt: answers only
    std::atomic<bool> answers_stop_{false};
    std::atomic<uint64_t> answered_{0};
    std::atomic<int64_t> jump_to_{-1};  // the answer thread's last request, for the cursor
    std::mutex answer_mu_;
    std::string answer_error_;
    std::atomic<bool> io_broke_{false};  // a send failed: the connection is broken
    uint64_t token_ = 0;                 // from the ack: presented by resume
    std::mutex resume_mu_;
    std::condition_variable resume_cv_;
    std::optional<TcpAddress> resume_to_;
    std::optional<Clock::time_point> dest_resumed_at_;  // kept across recoveries
    std::atomic<bool> dest_runs_{false};
    std::unique_ptr<DirtyTracker> dirty_;
    std::unique_ptr<ReturnPath> back_;
    PageIndex index_;
    std::unique_ptr<AtomicBitmap> sent_;  // pages the destination holds (precopy) or was sent

    // The RAM batch being filled.
    std::vector<uint64_t> batch_entries_;
    std::vector<uint8_t> batch_data_;
    uint32_t batch_data_pages_ = 0;
    uint64_t pending_skipped_ = 0, pending_duplicate_ = 0;  // added to stats_ per batch
    uint64_t round_bytes_ = 0;
    Clock::time_point round_start_;
    Clock::time_point start_;
    std::thread thread_;
};

}  // namespace ferry
