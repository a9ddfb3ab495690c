#include "monitor/machine_commands.hpp"

#include <xxhash.h>

#include <fmt/format.h>

#include "monitor/memory_json.hpp"

namespace ferry {

namespace {

QmpResult query_status(const Machine& m) {
    RunState s = m.run_state();
    return nlohmann::json{{"status", run_state_name(s)}, {"running", s == RunState::Running}, {"singlestep", false}};
}

QmpResult query_cpus_fast(const Machine& m) {
    nlohmann::json cpus = nlohmann::json::array();
    auto tids = m.vcpu_thread_ids();
    for (size_t i = 0; i < tids.size(); ++i) {
        cpus.push_back({{"cpu-index", i},
                        {"qom-path", fmt::format("/machine/unattached/device[{}]", i)},
                        {"thread-id", tids[i]},
                        {"props", {{"core-id", i}, {"thread-id", 0}, {"socket-id", 0}}},
                        {"target", "x86_64"}});
    }
    return cpus;
}

// XXH3-64 of every byte of guest RAM, per region and over all of it: two machines
// holding the same guest (a paused migration source and its paused destination) give
// the same figures. Reads every page (a missing postcopy page is fetched first).
QmpResult query_ram_checksum(const Machine& m) {
    nlohmann::json regions = nlohmann::json::array();
    XXH3_state_t* all = XXH3_createState();
    XXH3_64bits_reset(all);
    for (const auto& r : m.memory().regions()) {
        uint64_t h = XXH3_64bits(r.map.addr(), r.size());
        XXH3_64bits_update(all, &h, sizeof(h));
        regions.push_back({{"gpa", r.start.raw()}, {"size", r.size()}, {"xxh3", fmt::format("{:016x}", h)}});
    }
    uint64_t total = XXH3_64bits_digest(all);
    XXH3_freeState(all);
    return nlohmann::json{{"xxh3", fmt::format("{:016x}", total)}, {"regions", regions}, {"status", run_state_name(m.run_state())}};
}

QmpResult query_memory(const Machine& m, const std::function<nlohmann::json()>& extra) {
    auto report = memory_report(m.memory());
    if (!report) return qmp_error("cannot read the memory figures: " + report.error().message());
    auto j = to_json(*report);
    if (extra)
        if (auto more = extra(); more.is_object()) j.update(more);
    return j;
}

}  // namespace

Result<void> add_machine_commands(CommandTable& table, MachineCommandsContext ctx) {
    Machine* m = ctx.machine;
    auto emit = ctx.emit;
    auto quit = ctx.quit;
    std::vector<Command> cmds;
    cmds.push_back({"query-status", {}, [m](const nlohmann::json&, CallContext&) { return query_status(*m); }});
    cmds.push_back({"ferry-query-ram-checksum", {}, [m](const nlohmann::json&, CallContext&) { return query_ram_checksum(*m); }});
    auto owner = [o = ctx.migration_owner]() -> std::optional<std::string> { return o ? o() : std::nullopt; };
    cmds.push_back({"stop", {}, [m, emit, owner](const nlohmann::json&, CallContext&) -> QmpResult {
                        if (auto why = owner()) return qmp_error(*why);
                        if (m->run_state() != RunState::Running) return nlohmann::json::object();  // QEMU: no event
                        m->pause();
                        if (m->run_state() == RunState::Paused) emit("STOP", nullptr);
                        return nlohmann::json::object();
                    }});
    cmds.push_back({"cont", {}, [m, emit, owner](const nlohmann::json&, CallContext&) -> QmpResult {
                        if (auto why = owner()) return qmp_error(*why);
                        switch (m->run_state()) {
                            case RunState::Running: return nlohmann::json::object();
                            case RunState::Shutdown: return qmp_error("The guest has shut down; it cannot continue");
                            case RunState::Prelaunch:
                            case RunState::InMigrate:
                                // Only an incoming migration leaves a machine unstarted; it
                                // starts the guest itself once the state is in.
                                return qmp_error("Guest is waiting for an incoming migration");
                            case RunState::PostMigrate:
                                return qmp_error("The guest has migrated to another host; it cannot continue here");
                            case RunState::FinishMigrate:
                                return qmp_error("The guest is being handed over to the migration's destination");
                            case RunState::Paused: m->resume(); break;
                        }
                        if (m->run_state() == RunState::Running) emit("RESUME", nullptr);
                        return nlohmann::json::object();
                    }});
    cmds.push_back({"system_reset", {}, [m, emit, owner](const nlohmann::json&, CallContext&) -> QmpResult {
                        if (auto why = owner()) return qmp_error(*why);
                        if (auto ok = m->reset(); !ok) return qmp_error(ok.error().message());
                        emit("RESET", host_shutdown_event_data("host-qmp-system-reset"));
                        return nlohmann::json::object();
                    }});
    cmds.push_back({"quit", {}, [quit](const nlohmann::json&, CallContext&) -> QmpResult {
                        quit();
                        return nlohmann::json::object();
                    }});
    // QEMU's announce-self (AnnounceParameters; `id` is not supported: one schedule per card).
    // Like QEMU, a guest without network cards answers {} (nothing to announce).
    cmds.push_back({"announce-self",
                    {{"initial", ArgType::uinteger()},
                     {"max", ArgType::uinteger()},
                     {"rounds", ArgType::uinteger()},
                     {"step", ArgType::uinteger()},
                     {"interfaces", ArgType::array_of(ArgType::string()), true}},
                    [m](const nlohmann::json& a, CallContext&) -> QmpResult {
                        virtio::AnnounceParams p{a.at("initial").get<uint64_t>(), a.at("max").get<uint64_t>(),
                                                 a.at("rounds").get<uint64_t>(), a.at("step").get<uint64_t>()};
                        std::vector<std::string> ids;
                        if (a.contains("interfaces")) ids = a.at("interfaces").get<std::vector<std::string>>();
                        auto n = m->announce(p, ids);
                        if (!n) return qmp_error(n.error().message());
                        return nlohmann::json::object();
                    }});
    cmds.push_back({"query-cpus-fast", {}, [m](const nlohmann::json&, CallContext&) { return query_cpus_fast(*m); }});
    cmds.push_back({"ferry-query-memory", {}, [m, extra = ctx.memory_extra](const nlohmann::json&, CallContext&) { return query_memory(*m, extra); }});
    for (auto& c : cmds) {
        if (auto ok = table.add(std::move(c)); !ok) return ok;
    }
    return {};
}

nlohmann::json shutdown_event_data(const ShutdownRequest& req) {
    switch (req.kind) {
        case ShutdownKind::PowerOff: return {{"guest", true}, {"reason", "guest-shutdown"}};
        case ShutdownKind::Reset: return {{"guest", true}, {"reason", "guest-reset"}};
        case ShutdownKind::Crash: return {{"guest", true}, {"reason", "guest-panic"}};
        case ShutdownKind::HostRequest: return host_shutdown_event_data("host-signal");
    }
    return host_shutdown_event_data("host-signal");
}

nlohmann::json host_shutdown_event_data(std::string_view reason) { return {{"guest", false}, {"reason", std::string(reason)}}; }

}  // namespace ferry
