#include "vmm/boot/mptable.hpp"

#include <cstddef>
#include <cstring>
#include <fmt/format.h>
#include <type_traits>

namespace ferry {

namespace {

constexpr uint8_t kMpSpecRev = 4;         // 1.4
constexpr uint8_t kLapicVersion = 0x14;   // KVM's in-kernel LAPIC
constexpr uint8_t kIoApicVersion = 0x11;  // KVM's in-kernel IOAPIC (82093AA)
constexpr uint32_t kCpuSignature = 0x600;  // family 6; Linux only prints it
constexpr uint32_t kCpuFeatureFpu = 1u << 0, kCpuFeatureApic = 1u << 9;
constexpr uint8_t kIsaBus = 0;

template <class T>
void append(std::vector<uint8_t>& out, const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    // SAFETY: T is trivially copyable; its object representation is what the table holds.
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out.insert(out.end(), p, p + sizeof(T));
}

}  // namespace

uint8_t mp_checksum(std::span<const uint8_t> bytes) {
    uint8_t sum = 0;
    for (uint8_t b : bytes) sum = static_cast<uint8_t>(sum + b);
    return static_cast<uint8_t>(-sum);
}

std::vector<uint8_t> build_mptable(uint32_t cpus, uint64_t base) {
    const uint8_t ioapic_id = static_cast<uint8_t>(cpus);
    std::vector<uint8_t> table;  // the configuration table's entries
    uint16_t entries = 0;

    for (uint32_t id = 0; id < cpus; ++id, ++entries) {
        MpProcessorEntry p{};
        p.type = kMpProcessor;
        p.lapic_id = static_cast<uint8_t>(id);
        p.lapic_version = kLapicVersion;
        p.flags = kMpCpuEnabled | (id == 0 ? kMpCpuBsp : 0);
        p.signature = kCpuSignature;
        p.feature_flags = kCpuFeatureFpu | kCpuFeatureApic;
        append(table, p);
    }
    MpBusEntry bus{kMpBus, kIsaBus, {'I', 'S', 'A', ' ', ' ', ' '}};
    append(table, bus);
    ++entries;
    MpIoApicEntry io{kMpIoApic, ioapic_id, kIoApicVersion, 1, kIoApicAddr};
    append(table, io);
    ++entries;
    for (uint8_t irq = 0; irq < kMpIsaIrqs; ++irq, ++entries)
        append(table, MpInterruptEntry{kMpIoInterrupt, kMpIrqInt, 0, kIsaBus, irq, ioapic_id, irq});
    append(table, MpInterruptEntry{kMpLocalInterrupt, kMpIrqExtInt, 0, kIsaBus, 0, 0, 0});
    append(table, MpInterruptEntry{kMpLocalInterrupt, kMpIrqNmi, 0, kIsaBus, 0, 0xff, 1});
    entries += 2;

    MpConfigHeader h{};
    std::memcpy(h.signature, "PCMP", 4);
    h.length = static_cast<uint16_t>(sizeof(h) + table.size());
    h.spec_rev = kMpSpecRev;
    std::memcpy(h.oem_id, "FERRY   ", 8);
    std::memcpy(h.product_id, "FERRY VMM   ", 12);
    h.entry_count = entries;
    h.lapic_addr = kLapicAddr;
    std::vector<uint8_t> config;
    append(config, h);
    config.insert(config.end(), table.begin(), table.end());
    config[offsetof(MpConfigHeader, checksum)] = mp_checksum(config);

    MpFloatingPointer fp{};
    std::memcpy(fp.signature, "_MP_", 4);
    fp.config_table = static_cast<uint32_t>(base + sizeof(MpFloatingPointer));
    fp.length = 1;
    fp.spec_rev = kMpSpecRev;
    std::vector<uint8_t> out;
    append(out, fp);
    out[offsetof(MpFloatingPointer, checksum)] = mp_checksum(out);
    out.insert(out.end(), config.begin(), config.end());
    return out;
}

Result<void> write_mptable(const GuestMemory& mem, uint32_t cpus) {
    if (cpus == 0 || cpus > kMpMaxCpus)
        return fail(Domain::Loader, fmt::format("the MP table describes 1..{} vCPUs, not {}", kMpMaxCpus, cpus));
    auto bytes = build_mptable(cpus);
    if (kMpTableGpa + bytes.size() > 0x100000) return fail(Domain::Loader, "MP table does not fit below 1 MiB");
    if (auto ok = mem.write_bytes(Gpa(kMpTableGpa), bytes); !ok)
        return fail(Domain::Loader, fmt::format("MP table at {:#x}+{:#x}: {}", kMpTableGpa, bytes.size(), ok.error().message()));
    return {};
}

}  // namespace ferry
