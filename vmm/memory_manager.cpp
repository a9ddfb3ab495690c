#include "vmm/memory_manager.hpp"

#include <unistd.h>

#include <fmt/format.h>

#include <set>

#include "base/log.hpp"
#include "base/size.hpp"
#include "memory/numa.hpp"
#include "memory/policy.hpp"
#include "memory/prealloc.hpp"
#include "memory/report.hpp"
#include "vmm/machine.hpp"

namespace ferry {

namespace {

RegionPolicy zone_policy(const MachineConfig& cfg, uint32_t zone) {
    RegionPolicy p{cfg.thp, cfg.ksm, cfg.numa, cfg.prealloc};
    if (zone < cfg.zones.size() && cfg.zones[zone].numa.mode != NumaMode::Default) p.numa = cfg.zones[zone].numa;
    return p;
}

}  // namespace

// Guest RAM and its policy, region by region, before KVM sees any of it (STYLE.md
// §2): check the host nodes, map, then THP, NUMA, KSM and preallocation per region.
Result<std::unique_ptr<MemoryManager>> MemoryManager::create(const MachineConfig& cfg) {
    std::vector<uint64_t> zone_sizes;
    for (const auto& z : cfg.zones) zone_sizes.push_back(z.size);
    if (zone_sizes.empty()) zone_sizes.push_back(cfg.mem_size);
    uint64_t zones_total = 0;
    for (uint64_t z : zone_sizes) zones_total += z;
    if (zones_total != cfg.mem_size)
        return fail_config(ConfigItem::Mem, fmt::format("{}: the memory zones add up to {}", format_size(cfg.mem_size), format_size(zones_total)));
    for (uint32_t z = 0; z < zone_sizes.size(); ++z) {
        if (auto ok = check_numa_nodes(zone_policy(cfg, z).numa); !ok) return std::unexpected(ok.error());
    }
    auto mem = GuestMemory::create(zone_sizes, cfg.backend);
    if (!mem) return std::unexpected(mem.error());
    auto where = [](const MemoryRegion& r, const Error& e) {
        if (e.item != ConfigItem::None)  // the item's name leads: the region goes last
            return std::unexpected(Error{e.domain, e.err, fmt::format("{} (guest RAM at {:#x}, {})", e.context, r.start.raw(), format_size(r.size())), e.item});
        return fail(e.domain, fmt::format("guest RAM at {:#x} ({}): {}", r.start.raw(), format_size(r.size()), e.context), e.err);
    };
    for (const auto& r : mem->regions()) {
        RegionPolicy p = zone_policy(cfg, r.zone);
        if (auto ok = apply_thp(r.map, p.thp); !ok) return where(r, ok.error());
        if (auto ok = apply_numa(r.map, p.numa); !ok) return where(r, ok.error());
        if (auto ok = apply_ksm(r.map, p.ksm); !ok) return where(r, ok.error());
        if (auto ok = mem->record_policy(r.slot, p); !ok) return std::unexpected(ok.error());
    }
    // Only once every step succeeded: host settings that defeat a request.
    std::set<std::string> warned;
    for (const auto& r : mem->regions()) {
        for (const auto& w : host_policy_warnings(r.policy, r.map.backend())) {
            if (!warned.insert(w).second) continue;
            if (cfg.warn) cfg.warn(w);
            else logger("mem")->warn("{}", w);
        }
    }
    if (!cfg.prealloc) return std::unique_ptr<MemoryManager>(new MemoryManager(std::move(*mem)));
    uint64_t total = mem->total_size(), done = 0;
    if (cfg.prealloc_progress) cfg.prealloc_progress(0, total);
    for (const auto& r : mem->regions()) {
        auto ok = prealloc(r.map, [&](uint64_t bytes) {
            done += bytes;
            if (cfg.prealloc_progress) cfg.prealloc_progress(done, total);
        });
        if (!ok) return where(r, ok.error());
    }
    return std::unique_ptr<MemoryManager>(new MemoryManager(std::move(*mem)));
}

Result<void> MemoryManager::register_slots(Vm& vm) const {
    for (const auto& r : mem_.regions()) {
        if (auto ok = vm.set_user_memory_region(r.slot, r.start.raw(), r.size(), r.map.addr()); !ok)
            return fail(Domain::Memory, "KVM refused " + format_size(r.size()) + " of guest RAM: " + ok.error().message());
    }
    return {};
}

Result<void> MemoryManager::set_dirty_logging(Vm& vm, bool on) {
    if (on && !manual_dirty_log_)
        return fail(Domain::Kvm, "this KVM lacks KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 with initially-set bitmaps");
    for (const auto& r : mem_.regions()) {
        if (auto ok = vm.set_user_memory_region(r.slot, r.start.raw(), r.size(), r.map.addr(), on ? KVM_MEM_LOG_DIRTY_PAGES : 0); !ok)
            return ok;
    }
    dirty_logging_ = on;
    return {};
}

void MemoryManager::write_report(int fd) {
    if (fd < 0 || reported_) return;
    reported_ = true;
    std::string text;
    if (auto rep = memory_report(mem_)) {
        for (const auto& line : format_report(*rep)) text += line + "\n";
    } else {
        text = "ferry: memory: report failed: " + rep.error().message() + "\n";
    }
    [[maybe_unused]] ssize_t n = ::write(fd, text.data(), text.size());
}

}  // namespace ferry
