// Hardware-reduced ACPI tables (ACPI 6.4 §5.2), so a guest with ACPI (Linux with
// CONFIG_ACPI) finds its CPUs, its IOAPIC and its devices, and can power the machine off:
// the S5 write goes to ferry's sleep control register (devices/acpi_pm.hpp), and `ferry
// run` exits with status 0. Like QEMU microvm and Cloud Hypervisor, there is no PM1
// block, no SCI and no FACS: the FADT's HW_REDUCED_ACPI flag tells the guest so.
//
// Written for every boot unless --no-acpi, into the e820-reserved [0xe0000, 1 MiB),
// 16-byte aligned, one after another:
//   0xe0000  RSDP "RSD PTR " (revision 2, 36 B): XSDT address; Linux scans
//            0xe0000-0xfffff for it, and is also told: the zero page's acpi_rsdp_addr
//            (64-bit boot protocol), hvm_start_info.rsdp_paddr (PVH)
//   XSDT     the FADT and the MADT (the DSDT hangs off the FADT)
//   FADT     "FACP" revision 6.0 (276 B): HW_REDUCED_ACPI, RESET_REG_SUP; X_DSDT; the
//            reset register (I/O kAcpiResetPort, value kAcpiResetValue), the sleep control
//            (kAcpiSleepControlPort) and status (kAcpiSleepStatusPort) registers, 8-bit I/O
//   MADT     "APIC" revision 4: LAPIC at 0xfee00000; one Processor Local APIC per vCPU (UID
//            = APIC id = vCPU index, enabled); the IOAPIC (id = vCPUs, 0xfec00000, GSI
//            base 0); LAPIC NMI on LINT1 of every CPU. No Interrupt Source Override: ISA
//            IRQ n is IOAPIC pin n, edge-triggered, active high (KVM's default routing,
//            the same as the MP table's entries), which is what ACPI assumes without one
//   DSDT     "DSDT" revision 2: \_S5 = Package {5, 5, 0, 0}, and under \_SB: COM1
//            (PNP0501: ports 0x3f8-0x3ff, IRQ 4), RTC (PNP0B00: ports 0x70-0x71, no IRQ:
//            ferry's RTC raises none) and each virtio-mmio window VRnn (LNRO0005: 4 KiB
//            of MMIO, an edge-triggered interrupt)
// Every table's header checksum makes its bytes add up to 0 (mod 256); the RSDP has
// two (its first 20 bytes, and all 36).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/error.hpp"
#include "memory/guest_memory.hpp"

namespace ferry {

inline constexpr uint64_t kAcpiBase = 0xe0000;  // the RSDP
inline constexpr uint64_t kAcpiEnd = 0x100000;
inline constexpr uint16_t kAcpiSleepControlPort = 0x600;
inline constexpr uint16_t kAcpiSleepStatusPort = 0x601;
inline constexpr uint16_t kAcpiResetPort = 0x602;
inline constexpr uint8_t kAcpiResetValue = 0x01;
// Sleep control register (§4.8.3.7): SLP_TYPx in bits 2-4, SLP_EN in bit 5. \_S5's
// SLP_TYP is 5, so the guest writes 0x34 to power off.
inline constexpr uint8_t kAcpiSlpTypShift = 2, kAcpiSlpTypMask = 0x1c, kAcpiSlpEn = 0x20, kAcpiS5Type = 5;

struct AcpiVirtioMmio {
    uint64_t base;  // 4 KiB window, below 4 GiB
    uint32_t irq;   // GSI (IOAPIC pin)
};

struct AcpiConfig {
    uint32_t cpus = 1;
    std::vector<AcpiVirtioMmio> virtio;
};

// Field offsets the tests and the guest rely on (§5.2.9, table 5.9).
inline constexpr size_t kFadtLength = 276;
inline constexpr size_t kFadtFlags = 112, kFadtResetReg = 116, kFadtResetValue = 128, kFadtMinorVersion = 131,
                        kFadtXDsdt = 140, kFadtSleepControl = 244, kFadtSleepStatus = 256, kFadtHypervisorId = 268,
                        kFadtBootArch = 109;
inline constexpr uint32_t kFadtWbinvd = 1u << 0, kFadtPowerButton = 1u << 4, kFadtSleepButton = 1u << 5,
                          kFadtResetRegSup = 1u << 10, kFadtHwReduced = 1u << 20;
inline constexpr uint16_t kBootArchVgaNotPresent = 1u << 2, kBootArchMsiNotSupported = 1u << 3;
inline constexpr size_t kSdtHeaderLength = 36, kRsdpLength = 36;

struct AcpiTables {
    std::vector<uint8_t> bytes;  // everything from `base`, gaps zero-filled
    uint64_t base = 0;           // where bytes[0] goes: the RSDP
    uint64_t xsdt = 0, fadt = 0, madt = 0, dsdt = 0;  // guest-physical addresses
};

// The tables for `cfg`, laid out from `base`. Fails for 0 or more than 254 vCPUs,
// more than 255 virtio windows, or a window above 4 GiB.
Result<AcpiTables> build_acpi_tables(const AcpiConfig& cfg, uint64_t base = kAcpiBase);
// The DSDT's AML body (after the table header): \_S5 and the \_SB devices.
std::vector<uint8_t> build_dsdt_aml(const AcpiConfig& cfg);
// The byte that makes `bytes` add up to 0, with the checksum byte itself 0.
uint8_t acpi_checksum(std::span<const uint8_t> bytes);

// Builds the tables and writes them at kAcpiBase; fails when they would not fit below
// 1 MiB or that range is not guest RAM. Returns the RSDP's address.
Result<uint64_t> write_acpi_tables(const GuestMemory& mem, const AcpiConfig& cfg);

}  // namespace ferry
