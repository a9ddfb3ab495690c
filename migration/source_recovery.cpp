// The source's postcopy recovery (MigrationSource, migration/source.hpp): when the
// postcopy connection breaks, pause with every page the destination lacks, and go on
// through a new connection once the operator says where (docs/migration-protocol.md,
// "Postcopy recovery").
#include <fmt/format.h>

#include "base/log.hpp"
#include "migration/recovery.hpp"
#include "migration/source.hpp"

namespace ferry {

Result<void> MigrationSource::resume(const TcpAddress& to) {
    std::lock_guard lock(resume_mu_);
    auto st = stats_.get().status;
    if (st != MigrationStatus::PostcopyPaused)
        return fail(Domain::Migration,
                    fmt::format("no paused postcopy migration to resume (this one is {})", migration_status_name(st)));
    resume_to_ = to;
    // Said at once, so that a client polling query-migrate sees the recovery begin.
    set_status(MigrationStatus::PostcopyRecover);
    resume_cv_.notify_all();
    return {};
}

Result<void> MigrationSource::pause_postcopy() {
    auto st = stats_.get().status;
    if (st != MigrationStatus::PostcopyActive)
        return fail(Domain::Migration,
                    fmt::format("migrate-pause: only a postcopy migration can be paused (this one is {})", migration_status_name(st)));
    std::lock_guard lock(ch_mu_);
    if (ch_) ch_->cancel();
    if (urgent_) urgent_->cancel();
    return {};
}

Result<void> MigrationSource::recover_postcopy(const std::string& why) {
    auto log = logger("mig");
    {
        std::lock_guard lock(ch_mu_);
        if (ch_) ch_->cancel();
        if (urgent_) urgent_->cancel();
    }
    if (back_) {
        if (auto r = back_->events().resumed_at; r && !dest_resumed_at_) dest_resumed_at_ = r;
        back_->join();
    }
    {
        std::lock_guard lock(ch_mu_);
        back_.reset();
        ch_.reset();
        urgent_.reset();  // after a recovery, answers go on the one connection
    }
    io_broke_ = false;
    answers_stop_ = false;
    jump_to_ = -1;
    {
        std::lock_guard lock(answer_mu_);
        answer_error_.clear();
    }
    stats_.update([&](MigrationStats& s) {
        s.postcopy_pauses++;
        s.pause_reason = why;
    });
    {
        std::lock_guard lock(resume_mu_);
        resume_to_.reset();
        set_status(MigrationStatus::PostcopyPaused);
    }
    log->warn("postcopy paused: {}. The guest runs on the destination; the {} pages it lacks are all still here. Recover: "
              "QMP migrate-recover on the destination, then migrate with \"resume\": true here",
              why, index_.total() - sent_->count());
    for (;;) {
        TcpAddress to;
        {
            std::unique_lock lock(resume_mu_);
            resume_cv_.wait(lock, [&] { return resume_to_.has_value() || cancelled(); });
            if (cancelled()) return fail(Domain::Migration, "cancelled while postcopy was paused (" + why + ")");
            to = *resume_to_;
            resume_to_.reset();
        }
        set_status(MigrationStatus::PostcopyRecover);
        auto ok = reconnect(to);
        if (ok) {
            to_ = to;
            set_status(MigrationStatus::PostcopyActive);
            log->info("postcopy recovered through {}: {} pages still to send", to.text(), index_.total() - sent_->count());
            return {};
        }
        log->warn("postcopy recovery through {} failed: {}; still paused", to.text(), ok.error().message());
        std::lock_guard lock(resume_mu_);
        set_status(MigrationStatus::PostcopyPaused);
    }
}

// A new connection: present the token, learn which pages arrived (those lost in the
// broken connection go again), and start a reader for the new return path.
Result<void> MigrationSource::reconnect(const TcpAddress& to) {
    const MigrationTimeouts limits = params().timeouts;
    auto ch = Channel::connect(to, limits.setup, params().tls);
    if (!ch) return std::unexpected(ch.error());
    (void)ch->set_send_timeout(limits.stall);
    (void)ch->set_receive_timeout(limits.setup);
    if (auto ok = send_resume(*ch, token_); !ok) return ok;
    auto held = receive_received_bitmap(*ch, index_.total());
    if (!held) return std::unexpected(held.error());
    (void)ch->set_receive_timeout(std::chrono::milliseconds(0));  // keepalive and TCP_USER_TIMEOUT from here
    sent_->assign(*held);
    stats_.update([&](MigrationStats& s) { s.ram_remaining = (index_.total() - sent_->count()) * kPageSize; });
    std::lock_guard lock(ch_mu_);
    ch_ = std::make_unique<Channel>(std::move(*ch));
    if (cancelled()) return fail(Domain::Migration, "cancelled");
    back_ = std::make_unique<ReturnPath>(*ch_, m_.memory());
    back_->start();
    return {};
}

}  // namespace ferry
