// Unit tests: no /dev/kvm needed.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
