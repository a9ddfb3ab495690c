// Errors as the command line tells them: a configuration error about an item that an
// option sets (base/error.hpp ConfigItem) names that option.
#pragma once

#include <string>

#include "base/error.hpp"

namespace ferry {

// "--disk", "--numa-node"...; "" for ConfigItem::None.
const char* option_name(ConfigItem item);
// e.message(), with the option's name for the item's noun: "--disk '/x.img': not a
// regular file or block device".
std::string user_message(const Error& e);

}  // namespace ferry
