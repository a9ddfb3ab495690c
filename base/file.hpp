// Whole-file reads for kernel images, initrds and configs, with a size cap.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/error.hpp"

namespace ferry {

Result<std::vector<uint8_t>> read_file(const std::string& path, uint64_t max_size, const std::string& what);

}  // namespace ferry
