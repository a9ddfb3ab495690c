// `ferry migrate`: drive a live migration of a running ferry through its QMP socket
// and show its progress until it ends.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fmt/format.h>
#include <functional>
#include <thread>

#include "base/size.hpp"
#include "cli/messages.hpp"
#include "cli/commands.hpp"
#include "monitor/client.hpp"

namespace ferry {

namespace {

using namespace std::chrono_literals;
constexpr auto kCallTimeout = 10s;

volatile sig_atomic_t g_interrupted = 0;
void on_sigint(int) { g_interrupted = 1; }

int error_exit(int status, const std::string& msg) {
    fmt::print(stderr, "ferry: {}\n", msg);
    return status;
}

std::string progress_line(const nlohmann::json& q) {
    const auto& ram = q.value("ram", nlohmann::json::object());
    uint64_t sent = ram.value("normal-bytes", uint64_t{0});
    uint64_t remaining = ram.value("remaining", uint64_t{0});
    double pct = sent + remaining ? 100.0 * static_cast<double>(sent) / static_cast<double>(sent + remaining) : 0;
    std::string status = q.value("status", "?");
    if (status == "postcopy-active")
        return fmt::format("migrate: postcopy  {:5.1f}%  sent {} MiB  remaining {} MiB  pages asked for by faults {}", pct, sent >> 20,
                           remaining >> 20, ram.value("postcopy-requests", uint64_t{0}));
    return fmt::format("migrate: {:<9} round {:>2}  {:5.1f}%  sent {} MiB  at {:.0f} Mbit/s  remaining {} MiB  dirty {} pages/s",
                       status, ram.value("dirty-sync-count", uint64_t{0}), pct, sent >> 20,
                       ram.value("mbps", 0.0), remaining >> 20, ram.value("dirty-pages-rate", uint64_t{0}));
}

std::string summary_line(const nlohmann::json& q) {
    const auto& ram = q.value("ram", nlohmann::json::object());
    return fmt::format("migration completed: total {} ms, downtime {} ms, {} MiB transferred ({} pages with data, {} zero, "
                       "{} never touched), {} dirty-log rounds, {} pages asked for by postcopy faults",
                       q.value("total-time", uint64_t{0}), q.value("downtime", uint64_t{0}),
                       ram.value("transferred", uint64_t{0}) >> 20, ram.value("normal", uint64_t{0}),
                       ram.value("duplicate", uint64_t{0}), ram.value("skipped", uint64_t{0}),
                       ram.value("dirty-sync-count", uint64_t{0}), ram.value("postcopy-requests", uint64_t{0}));
}

// The last FERRY_MIGRATION_DONE event's data, if one arrived.
std::optional<nlohmann::json> final_stats(const QmpClient& c) {
    for (auto it = c.events().rbegin(); it != c.events().rend(); ++it)
        if (it->value("event", "") == "FERRY_MIGRATION_DONE") return it->value("data", nlohmann::json::object());
    return std::nullopt;
}

using CallFn = std::function<Result<nlohmann::json>(const std::string&, const nlohmann::json&)>;
// Reports the migration until it ends (or pauses): the exit status.
int follow(QmpClient& client, const CallFn& call, const MigrateArgs& a);

}  // namespace

int cmd_migrate(const MigrateArgs& a) {
    if (a.mode != "precopy" && a.mode != "postcopy" && a.mode != "hybrid")
        return error_exit(kExitUsage, fmt::format("--mode must be precopy, postcopy or hybrid, not '{}'", a.mode));
    bool postcopy = a.mode != "precopy";
    nlohmann::json params = nlohmann::json::object();
    if (a.downtime_limit) params["downtime-limit"] = *a.downtime_limit;
    if (a.max_bandwidth) {
        auto bw = parse_size(*a.max_bandwidth);
        if (!bw) return error_exit(kExitUsage, fmt::format("--max-bandwidth: '{}' is not a rate (bytes/s, e.g. 100M)", *a.max_bandwidth));
        params["max-bandwidth"] = *bw;
    }

    auto client = QmpClient::connect(a.qmp);
    if (!client) return error_exit(kExitUsage, client.error().message());
    if (auto g = client->handshake(kCallTimeout); !g) return error_exit(kExitError, g.error().message());
    CallFn call = [&](const std::string& name, const nlohmann::json& args) -> Result<nlohmann::json> {
        auto r = client->execute(name, args, kCallTimeout);
        if (!r) return r;
        if (r->contains("error"))
            return fail(Domain::Monitor, fmt::format("{}: {}", name, (*r)["error"].value("desc", "error")));
        return (*r)["return"];
    };
    if (a.tls) params["tls-creds"] = "tls0";
    if (!params.empty()) {
        if (auto r = call("migrate-set-parameters", params); !r) return error_exit(kExitError, r.error().message());
    }
    if (a.resume) {
        if (auto r = call("migrate", {{"uri", a.to}, {"resume", true}}); !r) return error_exit(kExitError, r.error().message());
        return follow(*client, call, a);
    }
    nlohmann::json caps = {{{"capability", "events"}, {"state", true}},
                           {{"capability", "postcopy-ram"}, {"state", postcopy}},
                           {{"capability", "x-postcopy-auto"}, {"state", a.mode == "hybrid"}},
                           {{"capability", "postcopy-preempt"}, {"state", postcopy && a.postcopy_preempt}}};
    if (auto r = call("migrate-set-capabilities", {{"capabilities", caps}}); !r) return error_exit(kExitError, r.error().message());
    if (auto r = call("migrate", {{"uri", a.to}}); !r) return error_exit(kExitError, r.error().message());
    // postcopy: switch as soon as the device state can go (QEMU's migrate-start-postcopy).
    if (a.mode == "postcopy") {
        if (auto r = call("migrate-start-postcopy", nlohmann::json::object()); !r) return error_exit(kExitError, r.error().message());
    }

    return follow(*client, call, a);
}

namespace {

int follow(QmpClient& client, const CallFn& call, const MigrateArgs& a) {
    struct sigaction sa {};
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    bool tty = ::isatty(STDERR_FILENO);
    bool cancel_sent = false;
    auto last_print = std::chrono::steady_clock::now() - 10s;
    for (;;) {
        if (g_interrupted && !cancel_sent) {
            fmt::print(stderr, "\nferry: cancelling the migration\n");
            if (auto r = call("migrate_cancel", nlohmann::json::object()); !r) fmt::print(stderr, "ferry: {}\n", r.error().message());
            cancel_sent = true;
        }
        auto q = call("query-migrate", nlohmann::json::object());
        if (!q) {
            // The source exits once the guest runs elsewhere: the final figures came as
            // an event just before the socket closed.
            client.drain_events(std::chrono::seconds(2));
            if (auto done = final_stats(client)) q = *done;
            else return error_exit(kExitError, "lost the source's monitor: " + q.error().message());
        }
        std::string status = q->value("status", "none");
        if (a.json) {
            fmt::print("{}\n", q->dump());
            std::fflush(stdout);
        } else if (a.progress) {
            auto now = std::chrono::steady_clock::now();
            if (tty) {
                fmt::print(stderr, "\r{}\x1b[K", progress_line(*q));
            } else if (now - last_print >= 1s || status == "completed") {
                fmt::print(stderr, "{}\n", progress_line(*q));
                last_print = now;
            }
        }
        if (status == "completed") {
            if (a.progress && tty) fmt::print(stderr, "\n");
            if (!a.json) fmt::print("{}\n", summary_line(*q));
            return 0;
        }
        if (status == "failed" || status == "cancelled") {
            if (a.progress && tty) fmt::print(stderr, "\n");
            return error_exit(kExitError, fmt::format("migration {}: {}", status, q->value("error-desc", status)));
        }
        if (status == "none") return error_exit(kExitError, "the migration did not start");
        if (status == "postcopy-paused") {
            if (a.progress && tty) fmt::print(stderr, "\n");
            return error_exit(kExitPaused,
                              fmt::format("postcopy paused: {}. The guest runs on the destination and every page it lacks is "
                                          "still here; recover it: QMP migrate-recover on the destination with a new "
                                          "tcp:HOST:PORT, then ferry migrate --qmp {} --resume --to that address",
                                          q->value("error-desc", "the connection broke"), a.qmp));
        }
        std::this_thread::sleep_for(200ms);
    }
}

}  // namespace

}  // namespace ferry
