// The fake guest RAM of the fuzz targets (tests/fuzz/), shared with make_seeds.cpp so
// that seeds point where the targets expect: two anonymous 64 KiB MmapRegions (each
// with its PROT_NONE guards) with a hole between them, so that a range crossing a
// region's end or lying in the hole must be refused.
//
//   [0x00000, 0x10000)  region 0: desc table at kDesc, avail ring at kAvail, used
//                                 ring at kUsed, free bytes from kData
//   [0x10000, 0x20000)  hole
//   [0x20000, 0x30000)  region 1
#pragma once

#include <cstdint>
#include <cstring>

#include "memory/guest_memory.hpp"

namespace ferry::fuzz {

inline constexpr uint64_t kRegionSize = 64 * 1024;
inline constexpr uint64_t kHighRegion = 0x20000;
inline constexpr uint64_t kDesc = 0x1000, kAvail = 0x2000, kUsed = 0x3000, kData = 0x4000;

// Built on first use and kept: mapping RAM per input would cost more than the parsing.
inline const GuestMemory& fake_ram() {
    static GuestMemory* mem = [] {
        auto* m = new GuestMemory();
        for (uint64_t at : {uint64_t{0}, kHighRegion}) {
            auto map = MmapRegion::create(Backend::Anonymous, kRegionSize, "fuzz-ram");
            if (!map || !m->add_region(Gpa(at), std::move(*map))) __builtin_trap();
        }
        return m;
    }();
    return *mem;
}

inline void clear_fake_ram() {
    for (const auto& r : fake_ram().regions()) std::memset(r.map.addr(), 0, r.size());
}

}  // namespace ferry::fuzz
