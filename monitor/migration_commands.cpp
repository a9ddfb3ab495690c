#include "monitor/migration_commands.hpp"

#include <algorithm>
#include <fmt/format.h>

namespace ferry {

namespace {
uint32_t percentile(const std::vector<uint32_t>& sorted, double q) {
    if (sorted.empty()) return 0;
    size_t i = static_cast<size_t>(q * static_cast<double>(sorted.size() - 1) + 0.5);
    return sorted[std::min(i, sorted.size() - 1)];
}
}  // namespace

nlohmann::json latency_json(const PostcopyFaultStats& f) {
    auto lat = f.latencies_us;
    std::sort(lat.begin(), lat.end());
    nlohmann::json series = nlohmann::json::array();
    for (const auto& x : f.series) series.push_back({x.at_us, x.gpa, x.latency_us});
    // Power-of-two buckets in microseconds: bucket i counts latencies < 2^i us.
    std::vector<uint64_t> buckets;
    for (uint32_t v : lat) {
        size_t b = 0;
        while ((1ull << b) <= v) ++b;
        if (buckets.size() <= b) buckets.resize(b + 1);
        buckets[b]++;
    }
    nlohmann::json j{{"faults", f.faults},
                     {"requests", f.requests},
                     {"count", lat.size()},
                     {"p50-us", percentile(lat, 0.50)},
                     {"p90-us", percentile(lat, 0.90)},
                     {"p99-us", percentile(lat, 0.99)},
                     {"max-us", lat.empty() ? 0 : lat.back()},
                     {"histogram-log2-us", buckets},
                     {"series-fields", {"at-us", "gpa", "latency-us"}},
                     {"series", series},
                     {"series-truncated", f.series.size() < lat.size()}};
    j["zero-served-locally"] = f.local_zero;
    if (f.thp_before_bytes) j["thp-before-collapse-bytes"] = *f.thp_before_bytes;
    if (f.thp_after_bytes) j["thp-after-collapse-bytes"] = *f.thp_after_bytes;
    return j;
}

nlohmann::json query_migrate_json(const MigrationStats& s, const std::optional<PostcopyFaultStats>& faults) {
    if (s.status == MigrationStatus::None) return nlohmann::json::object();
    nlohmann::json j{{"status", migration_status_name(s.status)}, {"total-time", s.total_time_ms}, {"setup-time", s.setup_time_ms}};
    if (s.downtime_ms) j["downtime"] = *s.downtime_ms;
    if (s.expected_downtime_ms && !migration_finished(s.status)) j["expected-downtime"] = *s.expected_downtime_ms;
    j["ram"] = {{"transferred", s.ram_transferred},
                {"remaining", s.ram_remaining},
                {"total", s.ram_total},
                {"duplicate", s.ram_duplicate},
                {"normal", s.ram_normal},
                {"normal-bytes", s.ram_normal_bytes},
                {"skipped", s.ram_skipped},
                {"dirty-sync-count", s.dirty_sync_count},
                {"mbps", s.mbps},
                {"dirty-pages-rate", s.dirty_pages_rate},
                {"page-size", 4096},
                {"postcopy-requests", faults ? faults->requests : s.postcopy_requests}};
    if (faults) {
        j["postcopy-blocktime"] = faults->blocktime_ms;
        j["postcopy-vcpu-blocktime"] = faults->vcpu_blocktime_ms;
    }
    if (s.status == MigrationStatus::Failed && !s.error.empty()) j["error-desc"] = s.error;
    // Why a postcopy paused (QEMU reports it so too), and how often it did.
    if (s.status == MigrationStatus::PostcopyPaused && !s.pause_reason.empty()) j["error-desc"] = s.pause_reason;
    if (s.postcopy_pauses) j["x-postcopy-pauses"] = s.postcopy_pauses;
    return j;
}

Result<void> add_migration_commands(CommandTable& table, MigrationControl& control) {
    MigrationControl* c = &control;
    auto add = [&](Command cmd) -> Result<void> { return table.add(std::move(cmd)); };

    if (auto ok = add({"migrate",
                       {{"uri", ArgType::string()},
                        {"blk", ArgType::boolean(), true},
                        {"inc", ArgType::boolean(), true},
                        {"detach", ArgType::boolean(), true},
                        {"resume", ArgType::boolean(), true}},
                       [c](const nlohmann::json& args, CallContext&) -> QmpResult {
                           if (args.value("blk", false) || args.value("inc", false))
                               return qmp_error("ferry does not migrate block devices ('blk'/'inc')");
                           if (args.value("resume", false)) {
                               if (auto ok = c->resume_outgoing(args.at("uri").get<std::string>()); !ok)
                                   return qmp_error(ok.error().message());
                               return nlohmann::json::object();
                           }
                           if (auto ok = c->start_outgoing(args.at("uri").get<std::string>()); !ok)
                               return qmp_error(ok.error().message());
                           return nlohmann::json::object();
                       }});
        !ok)
        return ok;
    if (auto ok = add({"migrate-incoming",
                       {{"uri", ArgType::string()}},
                       [c](const nlohmann::json& args, CallContext&) -> QmpResult {
                           auto port = c->start_incoming(args.at("uri").get<std::string>());
                           if (!port) return qmp_error(port.error().message());
                           return nlohmann::json::object();
                       }});
        !ok)
        return ok;
    if (auto ok = add({"migrate-recover",
                       {{"uri", ArgType::string()}},
                       [c](const nlohmann::json& args, CallContext&) -> QmpResult {
                           auto port = c->recover_incoming(args.at("uri").get<std::string>());
                           if (!port) return qmp_error(port.error().message());
                           return nlohmann::json::object();
                       }});
        !ok)
        return ok;
    if (auto ok = add({"migrate-pause", {},
                       [c](const nlohmann::json&, CallContext&) -> QmpResult {
                           if (auto ok = c->pause_postcopy(); !ok) return qmp_error(ok.error().message());
                           return nlohmann::json::object();
                       }});
        !ok)
        return ok;
    if (auto ok = add({"migrate_cancel", {},
                       [c](const nlohmann::json&, CallContext&) -> QmpResult {
                           if (auto ok = c->cancel_outgoing(); !ok) return qmp_error(ok.error().message());
                           return nlohmann::json::object();
                       }});
        !ok)
        return ok;
    if (auto ok = add({"query-migrate", {},
                       [c](const nlohmann::json&, CallContext&) -> QmpResult { return query_migrate_json(c->stats(), c->fault_stats()); }});
        !ok)
        return ok;
    if (auto ok = add({"ferry-query-migrate-latency", {},
                       [c](const nlohmann::json&, CallContext&) -> QmpResult {
                           auto f = c->fault_stats();
                           if (!f) return qmp_error("no postcopy migration has come in here (the latency is measured on the destination)");
                           return latency_json(*f);
                       }});
        !ok)
        return ok;

    ArgSpec cap_item{"capabilities",
                     ArgType::array_of(ArgType::object({{"capability", ArgType::string()}, {"state", ArgType::boolean()}}))};
    if (auto ok = add({"migrate-set-capabilities",
                       {cap_item},
                       [c](const nlohmann::json& args, CallContext&) -> QmpResult {
                           MigrationCapabilities caps = c->capabilities();
                           for (const auto& item : args.at("capabilities")) {
                               auto name = item.at("capability").get<std::string>();
                               bool on = item.at("state").get<bool>();
                               if (name == "events") {
                                   caps.events = on;
                               } else if (name == "postcopy-ram") {
                                   caps.postcopy_ram = on;
                               } else if (name == "postcopy-blocktime") {
                                   caps.postcopy_blocktime = on;
                               } else if (name == "x-postcopy-auto") {
                                   caps.postcopy_auto = on;
                               } else if (name == "postcopy-preempt") {
                                   caps.postcopy_preempt = on;
                               } else {
                                   return qmp_error(fmt::format("Parameter 'capability' does not accept value '{}'", name));
                               }
                           }
                           if (auto ok = c->set_capabilities(caps); !ok) return qmp_error(ok.error().message());
                           return nlohmann::json::object();
                       }});
        !ok)
        return ok;
    if (auto ok = add({"query-migrate-capabilities", {},
                       [c](const nlohmann::json&, CallContext&) -> QmpResult {
                           auto caps = c->capabilities();
                           return nlohmann::json::array({{{"capability", "events"}, {"state", caps.events}},
                                                         {{"capability", "postcopy-ram"}, {"state", caps.postcopy_ram}},
                                                         {{"capability", "postcopy-blocktime"}, {"state", caps.postcopy_blocktime}},
                                                         {{"capability", "x-postcopy-auto"}, {"state", caps.postcopy_auto}},
                                                         {{"capability", "postcopy-preempt"}, {"state", caps.postcopy_preempt}}});
                       }});
        !ok)
        return ok;
    if (auto ok = add({"migrate-set-parameters",
                       {{"downtime-limit", ArgType::uinteger(), true},
                        {"max-bandwidth", ArgType::uinteger(), true},
                        {"max-postcopy-bandwidth", ArgType::uinteger(), true},
                        {"x-max-rounds", ArgType::uinteger(), true},
                        {"x-setup-timeout", ArgType::uinteger(), true},
                        {"x-stall-timeout", ArgType::uinteger(), true},
                        {"x-switchover-timeout", ArgType::uinteger(), true},
                        {"tls-creds", ArgType::string(), true},
                        {"tls-authz", ArgType::string(), true}},
                       [c](const nlohmann::json& args, CallContext&) -> QmpResult {
                           MigrationParams p = c->params();
                           if (args.contains("tls-creds")) {
                               auto id = args.at("tls-creds").get<std::string>();
                               if (!c->tls_creds_known(id))
                                   return qmp_error(fmt::format("No TLS credentials with id '{}' (the credentials ferry was started "
                                                                "with have the id '{}')", id, MigrationControl::kTlsCredsId));
                               if (c->outgoing_active() || c->incoming_pending())
                                   return qmp_error("tls-creds cannot change while a migration is in progress or awaited");
                               p.tls_creds = id;
                           }
                           if (args.contains("tls-authz")) p.tls_authz = args.at("tls-authz").get<std::string>();
                           for (auto [name, field] : {std::pair{"x-setup-timeout", &p.timeouts.setup},
                                                      std::pair{"x-stall-timeout", &p.timeouts.stall},
                                                      std::pair{"x-switchover-timeout", &p.timeouts.switchover}}) {
                               if (!args.contains(name)) continue;
                               uint64_t v = args.at(name).get<uint64_t>();
                               if (v < 100 || v > 3600000)
                                   return qmp_error(fmt::format("Parameter '{}' expects milliseconds from 100 to 3600000", name));
                               *field = std::chrono::milliseconds(v);
                           }
                           if (args.contains("downtime-limit")) {
                               uint64_t v = args.at("downtime-limit").get<uint64_t>();
                               if (v > 2000000)
                                   return qmp_error("Parameter 'downtime_limit' expects an integer in the range of 0 to 2000000 milliseconds");
                               p.downtime_limit_ms = v;
                           }
                           if (args.contains("max-bandwidth")) p.max_bandwidth = args.at("max-bandwidth").get<uint64_t>();
                           if (args.contains("max-postcopy-bandwidth"))
                               p.max_postcopy_bandwidth = args.at("max-postcopy-bandwidth").get<uint64_t>();
                           if (args.contains("x-max-rounds")) {
                               uint64_t v = args.at("x-max-rounds").get<uint64_t>();
                               if (v < 1 || v > 1000) return qmp_error("Parameter 'x-max-rounds' expects an integer from 1 to 1000");
                               p.max_rounds = static_cast<uint32_t>(v);
                           }
                           c->set_params(p);
                           return nlohmann::json::object();
                       }});
        !ok)
        return ok;
    if (auto ok = add({"query-migrate-parameters", {},
                       [c](const nlohmann::json&, CallContext&) -> QmpResult {
                           auto p = c->params();
                           return nlohmann::json{{"downtime-limit", p.downtime_limit_ms},
                                                 {"max-bandwidth", p.max_bandwidth},
                                                 {"max-postcopy-bandwidth", p.max_postcopy_bandwidth},
                                                 {"x-max-rounds", p.max_rounds},
                                                 {"x-setup-timeout", p.timeouts.setup.count()},
                                                 {"x-stall-timeout", p.timeouts.stall.count()},
                                                 {"x-switchover-timeout", p.timeouts.switchover.count()},
                                                 {"tls-creds", p.tls_creds},
                                                 {"tls-authz", p.tls_authz}};
                       }});
        !ok)
        return ok;
    return add({"migrate-start-postcopy", {}, [c](const nlohmann::json&, CallContext&) -> QmpResult {
                    if (auto ok = c->start_postcopy(); !ok) return qmp_error(ok.error().message());
                    return nlohmann::json::object();
                }});
}

}  // namespace ferry
