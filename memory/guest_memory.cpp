#include "memory/guest_memory.hpp"

#include <algorithm>
#include <fmt/format.h>

namespace ferry {

std::vector<RamRange> ram_layout(uint64_t total) {
    std::vector<RamRange> out;
    uint64_t low = std::min(total, kLowRamLimit);
    if (low) out.push_back({Gpa(0), low});
    if (total > low) out.push_back({Gpa(kHighRamStart), total - low});
    return out;
}

std::vector<ZoneRange> zone_layout(const std::vector<uint64_t>& zone_sizes) {
    uint64_t total = 0;
    for (uint64_t z : zone_sizes) total += z;
    std::vector<ZoneRange> out;
    uint32_t zone = 0;
    uint64_t zone_left = zone_sizes.empty() ? 0 : zone_sizes[0];
    for (const RamRange& r : ram_layout(total)) {
        uint64_t off = 0;
        while (off < r.size) {
            while (zone_left == 0 && zone + 1 < zone_sizes.size()) zone_left = zone_sizes[++zone];
            uint64_t len = std::min(zone_left, r.size - off);
            out.push_back({Gpa(r.start.raw() + off), len, zone});
            off += len;
            zone_left -= len;
        }
    }
    return out;
}

Result<GuestMemory> GuestMemory::create(uint64_t total, Backend backend) {
    return create(std::vector<uint64_t>{total}, backend);
}

Result<GuestMemory> GuestMemory::create(const std::vector<uint64_t>& zone_sizes, Backend backend) {
    uint64_t total = 0;
    for (uint64_t z : zone_sizes) {
        if (z == 0) return fail(Domain::Memory, "guest RAM size must not be 0");
        if (z % kHugePageSize != 0) return fail(Domain::Memory, "guest RAM size must be a multiple of 2 MiB");
        if (__builtin_add_overflow(total, z, &total)) return fail(Domain::Memory, "guest RAM size overflows");
    }
    if (total == 0) return fail(Domain::Memory, "guest RAM size must not be 0");
    GuestMemory mem;
    for (const ZoneRange& r : zone_layout(zone_sizes)) {
        auto map = MmapRegion::create(backend, r.size, fmt::format("ferry-ram@{:#x}", r.start.raw()));
        if (!map) return std::unexpected(map.error());
        if (auto ok = mem.add_region(r.start, std::move(*map), r.zone); !ok) return std::unexpected(ok.error());
    }
    return mem;
}

Result<void> GuestMemory::record_policy(uint32_t slot, const RegionPolicy& p) {
    for (auto& r : regions_) {
        if (r.slot != slot) continue;
        r.policy = p;
        return {};
    }
    return fail(Domain::Memory, fmt::format("no guest RAM region with slot {}", slot));
}

Result<void> GuestMemory::add_region(Gpa start, MmapRegion map, uint32_t zone) {
    if (start.raw() % 4096 != 0 || map.size() == 0 || map.size() % 4096 != 0)
        return fail(Domain::Memory, fmt::format("region at {:#x} size {:#x} is not page aligned", start.raw(), map.size()));
    auto end = start.checked_add(map.size());
    if (!end) return fail(Domain::Memory, fmt::format("region at {:#x} wraps the address space", start.raw()));
    for (const auto& r : regions_) {
        uint64_t rend = r.start.raw() + r.size();
        if (start.raw() < rend && r.start.raw() < end->raw())
            return fail(Domain::Memory, fmt::format("region at {:#x} overlaps region at {:#x}", start.raw(), r.start.raw()));
    }
    uint32_t slot = static_cast<uint32_t>(regions_.size());
    regions_.push_back(MemoryRegion{start, std::move(map), slot, zone});
    std::sort(regions_.begin(), regions_.end(), [](const auto& a, const auto& b) { return a.start < b.start; });
    return {};
}

uint64_t GuestMemory::total_size() const {
    uint64_t t = 0;
    for (const auto& r : regions_) t += r.size();
    return t;
}

Result<std::span<uint8_t>> GuestMemory::slice(Gpa gpa, uint64_t len) const {
    for (const auto& r : regions_) {
        if (!r.contains(gpa)) continue;
        uint64_t off = gpa.raw() - r.start.raw();
        if (len > r.size() - off)
            return fail(Domain::Memory, fmt::format("guest range {:#x}+{:#x} crosses the end of RAM region {:#x}+{:#x}",
                                                    gpa.raw(), len, r.start.raw(), r.size()));
        return std::span<uint8_t>(r.map.addr() + off, len);
    }
    return fail(Domain::Memory, fmt::format("guest address {:#x} (len {:#x}) is not RAM", gpa.raw(), len));
}

Result<void> GuestMemory::write_bytes(Gpa gpa, std::span<const uint8_t> bytes) const {
    auto s = slice(gpa, bytes.size());
    if (!s) return std::unexpected(s.error());
    std::memcpy(s->data(), bytes.data(), bytes.size());
    return {};
}

}  // namespace ferry
