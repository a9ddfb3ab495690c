// The QMP migration commands, in QEMU's names and shapes:
//   migrate {"uri"}                 start an outgoing migration (returns at once)
//   migrate-incoming {"uri"}        receive one (a guest started with --incoming defer)
//   migrate_cancel                  cancel the outgoing migration; the guest runs on here
//   migrate-set-capabilities {"capabilities": [{"capability", "state"}]}
//                                   events (MIGRATION events); postcopy-ram and
//                                   postcopy-blocktime are refused until postcopy lands
//   migrate-set-parameters {"downtime-limit": ms, "max-bandwidth": bytes/s,
//                           "x-max-rounds": n (ferry's own: rounds before "not converging", default 30)}
//   query-migrate-parameters, query-migrate-capabilities
//   query-migrate                   {} before any migration; else status, total-time,
//                                   setup-time, downtime, expected-downtime, ram{...},
//                                   error-desc when failed
#pragma once

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "migration/stats.hpp"
#include "monitor/dispatcher.hpp"
#include "monitor/migration_control.hpp"

namespace ferry {

Result<void> add_migration_commands(CommandTable& table, MigrationControl& control);

// query-migrate's reply for these figures.
nlohmann::json query_migrate_json(const MigrationStats& s);

}  // namespace ferry
