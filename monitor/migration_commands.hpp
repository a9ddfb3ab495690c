// The QMP migration commands, in QEMU's names and shapes:
//   migrate {"uri"}                 start an outgoing migration (returns at once)
//   migrate {"uri", "resume": true} source, postcopy-paused: go on through a new connection
//   migrate-incoming {"uri"}        receive one (a guest started with --incoming defer)
//   migrate-recover {"uri"}         destination, postcopy-paused: listen there for the
//                                   source's resume (again: the new address replaces the last)
//   migrate-pause                   either side, postcopy-active: break the connection on
//                                   purpose (both sides pause, recoverable)
//   migrate_cancel                  cancel the outgoing migration; the guest runs on here
//                                   (refused in postcopy: the destination needs the pages)
//   migrate-set-capabilities {"capabilities": [{"capability", "state"}]}
//                                   events (MIGRATION events), postcopy-ram (may switch
//                                   to postcopy), postcopy-blocktime (accepted; ferry
//                                   always measures it), postcopy-preempt (answers on a
//                                   second connection), x-postcopy-auto (ferry's:
//                                   hybrid, switch by itself when precopy does not converge)
//   migrate-start-postcopy          switch the running migration to postcopy
//   ferry-query-migrate-latency     on a postcopy destination: faults, requests, the
//                                   fault -> page-placed latency (count, p50/p90/p99/max,
//                                   log2 histogram) and a time series of faults
//   migrate-set-parameters {"downtime-limit": ms, "max-bandwidth": bytes/s,
//                           "max-postcopy-bandwidth": bytes/s (after the switch; 0, the default: no cap),
//                           "x-max-rounds": n (ferry's own: rounds before "not converging", default 30),
//                           "x-setup-timeout", "x-stall-timeout", "x-switchover-timeout": ms
//                           (ferry's own bounds on each phase's waits; docs/migration-protocol.md)}
//   query-migrate-parameters, query-migrate-capabilities
//   query-migrate                   {} before any migration; else status, total-time,
//                                   setup-time, downtime, expected-downtime, ram{...},
//                                   postcopy-requests, postcopy-blocktime and
//                                   postcopy-vcpu-blocktime (destination, in ms),
//                                   error-desc when failed (or why postcopy paused),
//                                   x-postcopy-pauses (times the postcopy connection broke)
#pragma once

#include <optional>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "migration/stats.hpp"
#include "monitor/dispatcher.hpp"
#include "monitor/migration_control.hpp"

namespace ferry {

Result<void> add_migration_commands(CommandTable& table, MigrationControl& control);

// query-migrate's reply for these figures.
nlohmann::json query_migrate_json(const MigrationStats& s, const std::optional<PostcopyFaultStats>& faults = std::nullopt);
// ferry-query-migrate-latency's reply.
nlohmann::json latency_json(const PostcopyFaultStats& f);

}  // namespace ferry
