// The test guest's mixing function (guest/util.h mix64, splitmix64's finaliser), restated
// for the tests that check what the guest wrote or sent against its contract
// (guest/README.md): disk patterns, network frame checks.
#pragma once

#include <cstdint>

namespace ferry::test {

inline uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

}  // namespace ferry::test
