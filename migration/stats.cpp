#include "migration/stats.hpp"

namespace ferry {

const char* migration_status_name(MigrationStatus s) {
    switch (s) {
        case MigrationStatus::None: return "none";
        case MigrationStatus::Setup: return "setup";
        case MigrationStatus::Active: return "active";
        case MigrationStatus::Device: return "device";
        case MigrationStatus::PostcopyActive: return "postcopy-active";
        case MigrationStatus::PostcopyPaused: return "postcopy-paused";
        case MigrationStatus::PostcopyRecover: return "postcopy-recover";
        case MigrationStatus::Completed: return "completed";
        case MigrationStatus::Failed: return "failed";
        case MigrationStatus::Cancelling: return "cancelling";
        case MigrationStatus::Cancelled: return "cancelled";
    }
    return "?";
}

bool migration_finished(MigrationStatus s) {
    return s == MigrationStatus::Completed || s == MigrationStatus::Failed || s == MigrationStatus::Cancelled;
}

}  // namespace ferry
