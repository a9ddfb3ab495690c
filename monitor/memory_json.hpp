// The memory report (memory/report.hpp) as QMP's ferry-query-memory returns it (QMP
// naming: lower case, hyphens). Shape in docs/memory.md.
#pragma once

#include <nlohmann/json.hpp>

#include "memory/report.hpp"

namespace ferry {

nlohmann::json to_json(const MemoryReport& r);

}  // namespace ferry
