// Parsing of human sizes ("512M", "4G", "4096") as used on the command line,
// in TOML configs and (the same grammar) by the test guest.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ferry {

// Accepts a decimal number with an optional K/M/G/T suffix (binary units,
// case-insensitive, optional trailing "B" or "iB"). Rejects empty input,
// signs, junk, and anything that overflows 64 bits.
std::optional<uint64_t> parse_size(std::string_view s);

// "512 MiB", "4 GiB", "3 KiB", "17 B": the largest exact binary unit.
std::string format_size(uint64_t bytes);

}  // namespace ferry
