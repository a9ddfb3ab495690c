#include "devices/bus.hpp"

#include <algorithm>
#include <fmt/format.h>

namespace ferry {

Result<void> Bus::add(uint64_t base, uint64_t len, std::shared_ptr<BusDevice> dev) {
    if (len == 0 || base + len < base) return fail(Domain::Device, fmt::format("{} bus: bad range {:#x}+{:#x}", name_, base, len));
    auto next = ranges_.lower_bound(base);
    if (next != ranges_.end() && next->first < base + len)
        return fail(Domain::Device, fmt::format("{} bus: {} at {:#x} overlaps {}", name_, dev->id(), base, next->second.dev->id()));
    if (next != ranges_.begin()) {
        auto prev = std::prev(next);
        if (prev->first + prev->second.len > base)
            return fail(Domain::Device, fmt::format("{} bus: {} at {:#x} overlaps {}", name_, dev->id(), base, prev->second.dev->id()));
    }
    ranges_.emplace(base, Entry{len, std::move(dev)});
    return {};
}

const std::pair<const uint64_t, Bus::Entry>* Bus::find(uint64_t addr, uint64_t len) const {
    auto it = ranges_.upper_bound(addr);
    if (it == ranges_.begin()) return nullptr;
    --it;
    uint64_t off = addr - it->first;
    // The whole access must lie inside the device's range.
    if (off >= it->second.len || len > it->second.len - off) return nullptr;
    return &*it;
}

bool Bus::read(uint64_t addr, std::span<uint8_t> data) const {
    const auto* e = find(addr, data.size());
    if (!e) {
        std::fill(data.begin(), data.end(), 0xff);
        return false;
    }
    e->second.dev->read(addr - e->first, data);
    return true;
}

bool Bus::write(uint64_t addr, std::span<const uint8_t> data) const {
    const auto* e = find(addr, data.size());
    if (!e) return false;
    e->second.dev->write(addr - e->first, data);
    return true;
}

}  // namespace ferry
