#include <catch2/catch.hpp>

#include "base/size.hpp"

using ferry::parse_size;

TEST_CASE("sizes parse with binary suffixes", "[size]") {
    CHECK(parse_size("0") == 0u);
    CHECK(parse_size("4096") == 4096u);
    CHECK(parse_size("4K") == 4096u);
    CHECK(parse_size("512M") == 512ull << 20);
    CHECK(parse_size("512m") == 512ull << 20);
    CHECK(parse_size("4G") == 4ull << 30);
    CHECK(parse_size("4GiB") == 4ull << 30);
    CHECK(parse_size("4GB") == 4ull << 30);
    CHECK(parse_size("1T") == 1ull << 40);
    CHECK(parse_size("17B") == 17u);
}

TEST_CASE("bad sizes are refused", "[size]") {
    for (const char* bad : {"", "M", "-1", "+4", "4X", "4 G", "4GG", "4Gx", "0x10", "1.5G", "18446744073709551616",
                            "17179869184G", "16777216T"}) {
        INFO(bad);
        CHECK_FALSE(parse_size(bad).has_value());
    }
    CHECK(parse_size("18446744073709551615") == UINT64_MAX);
}

TEST_CASE("sizes format in the largest exact unit", "[size]") {
    CHECK(ferry::format_size(512ull << 20) == "512 MiB");
    CHECK(ferry::format_size(3ull << 30) == "3 GiB");
    CHECK(ferry::format_size(4097) == "4097 B");
    CHECK(ferry::format_size(0) == "0 B");
}
