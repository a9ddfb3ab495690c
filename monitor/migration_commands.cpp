#include "monitor/migration_commands.hpp"

#include <fmt/format.h>

namespace ferry {

nlohmann::json query_migrate_json(const MigrationStats& s) {
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
                {"postcopy-requests", 0}};
    if (s.status == MigrationStatus::Failed && !s.error.empty()) j["error-desc"] = s.error;
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
                           if (args.value("resume", false)) return qmp_error("ferry has no paused postcopy migration to resume");
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
    if (auto ok = add({"migrate_cancel", {},
                       [c](const nlohmann::json&, CallContext&) -> QmpResult {
                           c->cancel_outgoing();
                           return nlohmann::json::object();
                       }});
        !ok)
        return ok;
    if (auto ok = add({"query-migrate", {},
                       [c](const nlohmann::json&, CallContext&) -> QmpResult { return query_migrate_json(c->stats()); }});
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
                               } else if (name == "postcopy-ram" || name == "postcopy-blocktime") {
                                   if (on) return qmp_error(fmt::format("Capability '{}' is not implemented yet in ferry", name));
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
                           return nlohmann::json::array({{{"capability", "events"}, {"state", c->capabilities().events}},
                                                         {{"capability", "postcopy-ram"}, {"state", false}},
                                                         {{"capability", "postcopy-blocktime"}, {"state", false}}});
                       }});
        !ok)
        return ok;
    if (auto ok = add({"migrate-set-parameters",
                       {{"downtime-limit", ArgType::uinteger(), true},
                        {"max-bandwidth", ArgType::uinteger(), true},
                        {"x-max-rounds", ArgType::uinteger(), true}},
                       [c](const nlohmann::json& args, CallContext&) -> QmpResult {
                           MigrationParams p = c->params();
                           if (args.contains("downtime-limit")) {
                               uint64_t v = args.at("downtime-limit").get<uint64_t>();
                               if (v > 2000000)
                                   return qmp_error("Parameter 'downtime_limit' expects an integer in the range of 0 to 2000000 milliseconds");
                               p.downtime_limit_ms = v;
                           }
                           if (args.contains("max-bandwidth")) p.max_bandwidth = args.at("max-bandwidth").get<uint64_t>();
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
                                                 {"x-max-rounds", p.max_rounds}};
                       }});
        !ok)
        return ok;
    return add({"migrate-start-postcopy", {}, [](const nlohmann::json&, CallContext&) -> QmpResult {
                    return qmp_error("postcopy migration is not implemented yet in ferry");
                }});
}

}  // namespace ferry
