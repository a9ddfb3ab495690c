// GuestMemory: the guest's RAM as a set of regions, each one host mapping placed at
// a guest-physical address, and the ONE bounds-checked accessor to it.
//
//   guest-physical                      host-virtual (each 2 MiB aligned)
//   [0 .............. low_end)    <-    region 0 mapping
//   [low_end ........ 4 GiB)            hole: MMIO, LAPIC, IOAPIC (no RAM)
//   [4 GiB .......... 4 GiB+high) <-    region 1 mapping (only if RAM > low limit)
//
// With memory zones (TOML [[memory-zone]]) guest RAM is cut into consecutive zones,
// each with its own NUMA policy; a zone that straddles the hole becomes two regions.
// Each region records its zone and the policy applied to it (memory/policy.hpp).
//
// slice(gpa, len) validates the whole [gpa, gpa+len) range (overflow-checked, inside
// one region) before handing out a span; read_obj/write_obj go through it. Devices,
// loaders and the migration loader never compute host pointers themselves.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "base/error.hpp"
#include "memory/address.hpp"
#include "memory/mmap_region.hpp"
#include "memory/policy.hpp"

namespace ferry {

// Where guest RAM goes in guest-physical space for a given total size.
struct RamRange {
    Gpa start;
    uint64_t size;
};
inline constexpr uint64_t kLowRamLimit = 3ull << 30;    // RAM below the 32-bit hole
inline constexpr uint64_t kHighRamStart = 4ull << 30;   // RAM continues here
std::vector<RamRange> ram_layout(uint64_t total);
// ram_layout() of the zones' total, cut at zone boundaries (each a multiple of 2 MiB).
struct ZoneRange {
    Gpa start;
    uint64_t size;
    uint32_t zone;
};
std::vector<ZoneRange> zone_layout(const std::vector<uint64_t>& zone_sizes);

struct MemoryRegion {
    Gpa start;
    MmapRegion map;
    uint32_t slot;
    uint32_t zone = 0;
    RegionPolicy policy{};  // what was applied (GuestMemory::record_policy); default: nothing

    uint64_t size() const { return map.size(); }
    bool contains(Gpa gpa) const { return gpa >= start && gpa.raw() - start.raw() < size(); }
};

class GuestMemory {
public:
    GuestMemory() = default;
    GuestMemory(const GuestMemory&) = delete;
    GuestMemory& operator=(const GuestMemory&) = delete;
    GuestMemory(GuestMemory&&) = default;
    GuestMemory& operator=(GuestMemory&&) = default;

    // Allocate RAM for `total` bytes laid out by ram_layout().
    static Result<GuestMemory> create(uint64_t total, Backend backend);
    // Allocate RAM for consecutive zones of these sizes (multiples of 2 MiB).
    static Result<GuestMemory> create(const std::vector<uint64_t>& zone_sizes, Backend backend);
    // Adds a region; refuses overlaps and unaligned starts.
    Result<void> add_region(Gpa start, MmapRegion map, uint32_t zone = 0);
    // Records the policy steps applied to the region with this slot (for reports).
    Result<void> record_policy(uint32_t slot, const RegionPolicy& p);

    const std::vector<MemoryRegion>& regions() const { return regions_; }
    uint64_t total_size() const;

    // The accessor. [gpa, gpa+len) must lie inside one region; len 0 is allowed for
    // a gpa inside a region and gives an empty span.
    Result<std::span<uint8_t>> slice(Gpa gpa, uint64_t len) const;

    template <class T>
    Result<T> read_obj(Gpa gpa) const {
        static_assert(std::is_trivially_copyable_v<T>);
        auto s = slice(gpa, sizeof(T));
        if (!s) return std::unexpected(s.error());
        T v;
        std::memcpy(&v, s->data(), sizeof(T));
        return v;
    }
    template <class T>
    Result<void> write_obj(Gpa gpa, const T& v) const {
        static_assert(std::is_trivially_copyable_v<T>);
        auto s = slice(gpa, sizeof(T));
        if (!s) return std::unexpected(s.error());
        std::memcpy(s->data(), &v, sizeof(T));
        return {};
    }
    Result<void> write_bytes(Gpa gpa, std::span<const uint8_t> bytes) const;

private:
    std::vector<MemoryRegion> regions_;
};

}  // namespace ferry
