// Intel MultiProcessor Specification 1.4 tables, so a guest without ACPI (Linux with
// CONFIG_X86_MPPARSE) finds its CPUs, the ISA bus and the IOAPIC and brings the APs
// up itself. Written for every boot (PVH and Linux) into [0x9fc00, 1 MiB), which
// build_e820() reports as reserved; the test guest ignores it.
//
//   0x9fc00  floating pointer "_MP_" (16 B; Linux scans 639K..640K for it)
//   0x9fc10  configuration table "PCMP" (44 B header), then its entries:
//            processor x cpus   (20 B each: LAPIC id = vCPU id, enabled, BSP on 0)
//            bus 0 "ISA   "     (8 B)
//            IOAPIC id = cpus at 0xfec00000 (8 B)
//            I/O interrupt x 16 (ISA IRQ n -> IOAPIC pin n, conforming polarity/trigger)
//            local interrupt x 2 (ExtINT -> BSP LINT0, NMI -> every LINT1)
// Both structures carry a byte checksum: all their bytes add up to 0 (mod 256).
// Like Firecracker's mptable.rs and kvmtool's x86/mptable.c.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/error.hpp"
#include "memory/guest_memory.hpp"

namespace ferry {

inline constexpr uint64_t kMpTableGpa = 0x9fc00;
inline constexpr uint32_t kIoApicAddr = 0xfec00000;
inline constexpr uint32_t kLapicAddr = 0xfee00000;
inline constexpr uint32_t kMpMaxCpus = 254;  // 8-bit APIC ids, and the IOAPIC takes id `cpus`
inline constexpr unsigned kMpIsaIrqs = 16;

// Entry types (MP spec table 4-3) and the structures' layout (all fields naturally
// aligned, so no packing is needed; the static_asserts pin the sizes).
enum MpEntryType : uint8_t { kMpProcessor = 0, kMpBus = 1, kMpIoApic = 2, kMpIoInterrupt = 3, kMpLocalInterrupt = 4 };
enum MpIrqType : uint8_t { kMpIrqInt = 0, kMpIrqNmi = 1, kMpIrqSmi = 2, kMpIrqExtInt = 3 };
inline constexpr uint8_t kMpCpuEnabled = 1, kMpCpuBsp = 2;

struct MpFloatingPointer {
    char signature[4];  // "_MP_"
    uint32_t config_table;
    uint8_t length;     // in 16-byte units: 1
    uint8_t spec_rev;   // 4 = 1.4
    uint8_t checksum;
    uint8_t features[5];  // features[0] = 0: a configuration table is present
};
struct MpConfigHeader {
    char signature[4];  // "PCMP"
    uint16_t length;    // header + entries
    uint8_t spec_rev;
    uint8_t checksum;
    char oem_id[8];
    char product_id[12];
    uint32_t oem_table;
    uint16_t oem_table_size;
    uint16_t entry_count;
    uint32_t lapic_addr;
    uint16_t ext_table_length;
    uint8_t ext_table_checksum;
    uint8_t reserved;
};
struct MpProcessorEntry {
    uint8_t type;
    uint8_t lapic_id;
    uint8_t lapic_version;
    uint8_t flags;  // kMpCpuEnabled | kMpCpuBsp
    uint32_t signature;
    uint32_t feature_flags;
    uint32_t reserved[2];
};
struct MpBusEntry {
    uint8_t type;
    uint8_t bus_id;
    char bus_type[6];
};
struct MpIoApicEntry {
    uint8_t type;
    uint8_t id;
    uint8_t version;
    uint8_t flags;  // 1: usable
    uint32_t addr;
};
struct MpInterruptEntry {  // I/O (type 3) and local (type 4) interrupt assignments
    uint8_t type;
    uint8_t irq_type;
    uint16_t flags;  // polarity/trigger; 0 = conforms to the bus
    uint8_t src_bus;
    uint8_t src_irq;
    uint8_t dst_apic;  // IOAPIC id, or LAPIC id (0xff: all)
    uint8_t dst_pin;   // IOAPIC pin, or LINTn
};
static_assert(sizeof(MpFloatingPointer) == 16 && sizeof(MpConfigHeader) == 44 && sizeof(MpProcessorEntry) == 20);
static_assert(sizeof(MpBusEntry) == 8 && sizeof(MpIoApicEntry) == 8 && sizeof(MpInterruptEntry) == 8);

// The bytes of both structures for `cpus` vCPUs, as they go at `base` (the floating
// pointer first, the configuration table right after it).
std::vector<uint8_t> build_mptable(uint32_t cpus, uint64_t base = kMpTableGpa);
// The byte that makes `bytes` sum to 0, given the checksum byte itself is 0.
uint8_t mp_checksum(std::span<const uint8_t> bytes);
// Writes the tables at kMpTableGpa; fails for 0 or more than kMpMaxCpus vCPUs, or
// when that range is not guest RAM.
Result<void> write_mptable(const GuestMemory& mem, uint32_t cpus);

}  // namespace ferry
