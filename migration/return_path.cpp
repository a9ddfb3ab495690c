#include "migration/return_path.hpp"
#include "base/log.hpp"
#include "base/seccomp.hpp"

#include <fmt/format.h>

#include "base/state_io.hpp"
#include "migration/stream.hpp"

namespace ferry {

void ReturnPath::start() {
    thread_ = std::thread([this] { run(); });
}

void ReturnPath::join() {
    if (thread_.joinable()) thread_.join();
}

void ReturnPath::broke(const std::string& why) {
    std::lock_guard lock(mu_);
    if (ev_.error.empty()) ev_.error = why;
    cv_.notify_all();
}

void ReturnPath::run() {
    if (auto ok = seccomp::confine_this_thread(seccomp::ThreadKind::Migration); !ok) logger("mig")->error("{}", ok.error().message());
    Section s{};
    for (;;) {
        if (auto ok = recv_section_into(ch_, s); !ok) {
            {
                std::lock_guard lock(mu_);
                ev_.connection_broke = ev_.error.empty();
            }
            broke("the destination's connection broke: " + ok.error().message());
            return;
        }
        std::unique_lock lock(mu_);
        switch (s.kind) {
            case SectionKind::SyncAck: ev_.sync_acks++; break;
            case SectionKind::Ready: ev_.ready = true; break;
            case SectionKind::Resumed: ev_.resumed_at = Clock::now(); break;
            case SectionKind::PostcopyDone: ev_.postcopy_done = true; break;
            case SectionKind::PageRequest: {
                auto runs = decode_page_runs(mem_, s.payload);
                if (!runs) {
                    lock.unlock();
                    broke("the destination sent a bad page request: " + runs.error().message());
                    return;
                }
                for (const auto& r : *runs)
                    for (uint32_t i = 0; i < r.pages; ++i) requests_.push_back(r.gpa + uint64_t{i} * kPageSize);
                break;
            }
            case SectionKind::Error:
                ev_.not_started = s.instance == kErrorGuestNotStarted;
                lock.unlock();
                broke("the destination reported: " + error_reason(s));
                return;
            default:
                lock.unlock();
                broke(fmt::format("stream: the destination sent an unexpected {} section", section_name(s.kind)));
                return;
        }
        cv_.notify_all();
    }
}

std::deque<uint64_t> ReturnPath::take_requests(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    if (requests_.empty() && timeout.count() > 0) cv_.wait_for(lock, timeout, [&] { return !requests_.empty() || !ev_.error.empty() || ev_.postcopy_done; });
    std::deque<uint64_t> out;
    out.swap(requests_);
    return out;
}

}  // namespace ferry
