#include "vmm/boot/acpi.hpp"

#include <fmt/format.h>

#include <cstring>
#include <exception>
#include <string_view>

#include "vmm/boot/aml.hpp"
#include "vmm/boot/mptable.hpp"

namespace ferry {

namespace {

constexpr char kOemId[] = "FERRY ";       // 6 bytes
constexpr char kOemTableId[] = "FERRYVM ";  // 8 bytes
constexpr char kCreatorId[] = "FRRY";
constexpr uint32_t kOemRevision = 1, kCreatorRevision = 1;
constexpr uint8_t kMadtLapic = 0, kMadtIoApic = 1, kMadtLapicNmi = 4;
constexpr uint8_t kGasSystemIo = 1, kGasAccessByte = 1;

void put(std::vector<uint8_t>& b, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put_at(std::vector<uint8_t>& b, size_t at, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) b[at + static_cast<size_t>(i)] = static_cast<uint8_t>(v >> (8 * i));
}
void put_chars(std::vector<uint8_t>& b, std::string_view s) { b.insert(b.end(), s.begin(), s.end()); }

// The 36-byte System Description Table header (§5.2.6); length and checksum are filled
// in by finish().
std::vector<uint8_t> header(std::string_view signature, uint8_t revision) {
    std::vector<uint8_t> b;
    put_chars(b, signature);
    put(b, 0, 4);  // length
    b.push_back(revision);
    b.push_back(0);  // checksum
    put_chars(b, std::string_view(kOemId, 6));
    put_chars(b, std::string_view(kOemTableId, 8));
    put(b, kOemRevision, 4);
    put_chars(b, std::string_view(kCreatorId, 4));
    put(b, kCreatorRevision, 4);
    return b;
}

void finish(std::vector<uint8_t>& t) {
    put_at(t, 4, t.size(), 4);
    t[9] = 0;
    t[9] = acpi_checksum(t);
}

// A Generic Address Structure (§5.2.3.2): one byte-wide I/O port.
void put_io_gas(std::vector<uint8_t>& b, size_t at, uint16_t port) {
    b[at] = kGasSystemIo;
    b[at + 1] = 8;  // bit width
    b[at + 2] = 0;  // bit offset
    b[at + 3] = kGasAccessByte;
    put_at(b, at + 4, port, 8);
}

std::vector<uint8_t> build_fadt(uint64_t dsdt) {
    auto t = header("FACP", 6);
    t.resize(kFadtLength, 0);
    put_at(t, kFadtFlags, kFadtWbinvd | kFadtPowerButton | kFadtSleepButton | kFadtResetRegSup | kFadtHwReduced, 4);
    // IAPC_BOOT_ARCH: no VGA, no MSI (nothing is on PCI); the 8042 bit stays clear since
    // ferry's i8042 only takes the reset command; LEGACY_DEVICES clear, CMOS RTC present.
    put_at(t, kFadtBootArch, kBootArchVgaNotPresent | kBootArchMsiNotSupported, 2);
    put_io_gas(t, kFadtResetReg, kAcpiResetPort);
    t[kFadtResetValue] = kAcpiResetValue;
    t[kFadtMinorVersion] = 0;  // 6.0
    put_at(t, kFadtXDsdt, dsdt, 8);
    put_io_gas(t, kFadtSleepControl, kAcpiSleepControlPort);
    put_io_gas(t, kFadtSleepStatus, kAcpiSleepStatusPort);
    std::memcpy(t.data() + kFadtHypervisorId, "FERRYVMM", 8);
    finish(t);
    return t;
}

std::vector<uint8_t> build_madt(uint32_t cpus) {
    auto t = header("APIC", 4);
    put(t, kLapicAddr, 4);
    put(t, 0, 4);  // flags: no PCAT_COMPAT (hardware-reduced: the guest leaves the 8259s alone)
    for (uint32_t id = 0; id < cpus; ++id) {
        t.insert(t.end(), {kMadtLapic, 8, static_cast<uint8_t>(id), static_cast<uint8_t>(id)});
        put(t, 1, 4);  // enabled
    }
    t.insert(t.end(), {kMadtIoApic, 12, static_cast<uint8_t>(cpus), 0});
    put(t, kIoApicAddr, 4);
    put(t, 0, 4);  // GSI base
    // NMI on LINT1 of every processor (UID 0xff), polarity and trigger as the bus says.
    t.insert(t.end(), {kMadtLapicNmi, 6, 0xff, 0, 0, 1});
    finish(t);
    return t;
}

std::vector<uint8_t> build_xsdt(std::span<const uint64_t> tables) {
    auto t = header("XSDT", 1);
    for (uint64_t a : tables) put(t, a, 8);
    finish(t);
    return t;
}

std::vector<uint8_t> build_rsdp(uint64_t xsdt) {
    std::vector<uint8_t> b;
    put_chars(b, "RSD PTR ");
    b.push_back(0);  // checksum of the first 20 bytes
    put_chars(b, std::string_view(kOemId, 6));
    b.push_back(2);  // revision: ACPI 2.0+, with an XSDT
    put(b, 0, 4);    // no RSDT
    put(b, kRsdpLength, 4);
    put(b, xsdt, 8);
    b.push_back(0);  // extended checksum
    put(b, 0, 3);
    b[8] = acpi_checksum(std::span<const uint8_t>(b).first(20));
    b[32] = acpi_checksum(b);
    return b;
}

uint64_t align16(uint64_t v) { return (v + 15) & ~uint64_t{15}; }

}  // namespace

// The same byte sum as the MP table's.
uint8_t acpi_checksum(std::span<const uint8_t> bytes) { return mp_checksum(bytes); }

std::vector<uint8_t> build_dsdt_aml(const AcpiConfig& cfg) {
    using namespace aml;
    std::vector<Bytes> devices;
    devices.push_back(device("COM1", {name("_HID", eisa_id("PNP0501")), name("_UID", integer(1)),
                                      name("_CRS", resource_template({io_port(0x3f8, 8), irq_no_flags(4)}))}));
    devices.push_back(device("RTC", {name("_HID", eisa_id("PNP0B00")), name("_CRS", resource_template({io_port(0x70, 2)}))}));
    for (size_t i = 0; i < cfg.virtio.size(); ++i) {
        const auto& v = cfg.virtio[i];
        devices.push_back(device(fmt::format("VR{:02X}", i),
                                 {name("_HID", string("LNRO0005")), name("_UID", integer(i)),
                                  name("_CCA", integer(1)),  // cache-coherent DMA
                                  name("_CRS", resource_template({memory32_fixed(static_cast<uint32_t>(v.base), 0x1000),
                                                                  interrupt_edge(v.irq)}))}));
    }
    Bytes out = name("\\_S5", package({integer(kAcpiS5Type), integer(kAcpiS5Type), integer(0), integer(0)}));
    Bytes sb = scope("\\_SB", devices);
    out.insert(out.end(), sb.begin(), sb.end());
    return out;
}

Result<AcpiTables> build_acpi_tables(const AcpiConfig& cfg, uint64_t base) {
    if (cfg.cpus == 0 || cfg.cpus > kMpMaxCpus)
        return fail(Domain::Loader, fmt::format("the ACPI tables describe 1..{} vCPUs, not {}", kMpMaxCpus, cfg.cpus));
    if (cfg.virtio.size() > 255) return fail(Domain::Loader, "the DSDT names at most 255 virtio-mmio windows");
    for (const auto& v : cfg.virtio)
        if (v.base + 0x1000 > (uint64_t{1} << 32))
            return fail(Domain::Loader, fmt::format("virtio-mmio window {:#x} is above 4 GiB", v.base));
    try {
        AcpiTables out;
        out.base = base;
        out.xsdt = align16(base + kRsdpLength);
        // The XSDT's size is known up front (two entries), so the others follow it.
        out.fadt = align16(out.xsdt + kSdtHeaderLength + 2 * 8);
        out.madt = align16(out.fadt + kFadtLength);
        auto madt = build_madt(cfg.cpus);
        out.dsdt = align16(out.madt + madt.size());
        auto dsdt = header("DSDT", 2);
        auto body = build_dsdt_aml(cfg);
        dsdt.insert(dsdt.end(), body.begin(), body.end());
        finish(dsdt);
        const uint64_t tables[] = {out.fadt, out.madt};
        auto place = [&](uint64_t at, const std::vector<uint8_t>& t) {
            const size_t off = at - base;
            if (out.bytes.size() < off + t.size()) out.bytes.resize(off + t.size(), 0);
            std::memcpy(out.bytes.data() + off, t.data(), t.size());
        };
        place(base, build_rsdp(out.xsdt));
        place(out.xsdt, build_xsdt(tables));
        place(out.fadt, build_fadt(out.dsdt));
        place(out.madt, madt);
        place(out.dsdt, dsdt);
        return out;
    } catch (const std::exception& e) {  // a name or size the AML encoder refuses: a bug here, not bad input
        return fail(Domain::Loader, fmt::format("ACPI tables: {}", e.what()));
    }
}

Result<uint64_t> write_acpi_tables(const GuestMemory& mem, const AcpiConfig& cfg) {
    auto t = build_acpi_tables(cfg);
    if (!t) return std::unexpected(t.error());
    if (t->base + t->bytes.size() > kAcpiEnd)
        return fail(Domain::Loader, fmt::format("the ACPI tables ({} bytes) do not fit below 1 MiB", t->bytes.size()));
    if (auto ok = mem.write_bytes(Gpa(t->base), t->bytes); !ok)
        return fail(Domain::Loader, fmt::format("ACPI tables at {:#x}+{:#x}: {}", t->base, t->bytes.size(), ok.error().message()));
    return t->base;
}

}  // namespace ferry
