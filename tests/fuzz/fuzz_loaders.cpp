// fuzz_loaders: the kernel loaders and the boot tables on hostile files. The first
// byte picks what the rest is:
//   0  a PVH ELF kernel (load_pvh), with a 4 KiB initrd
//   1  a bzImage (load_bzimage: parse_bzimage, placement, zero page)
//   2  an ELF vmlinux without a PVH note (load_vmlinux)
//   3  any file: detect_kernel_format, then whichever loader that picks
//   4  an ACPI configuration: u8 vCPUs, u8 virtio windows, then u32 base and u8 irq
//      per window: build_acpi_tables / write_acpi_tables, whose RSDP->XSDT->tables
//      must all lie in [0xe0000, 1 MiB) with zero checksums
// into 32 MiB of guest RAM. A loader may refuse anything; it must never crash, write
// outside RAM, or return an entry point or boot-information address outside RAM.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "vmm/boot/acpi.hpp"
#include "vmm/boot/linux.hpp"
#include "vmm/boot/pvh.hpp"

using namespace ferry;

namespace {

constexpr uint64_t kRam = 32ull << 20;

const GuestMemory& ram() {
    static GuestMemory* mem = [] {
        auto* m = new GuestMemory();
        auto map = MmapRegion::create(Backend::Anonymous, kRam, "fuzz-ram");
        if (!map || !m->add_region(Gpa(0), std::move(*map))) __builtin_trap();
        return m;
    }();
    return *mem;
}

void in_ram(uint64_t gpa, uint64_t len = 1) {
    if (!ram().slice(Gpa(gpa), len)) __builtin_trap();
}

void linux_boot(const Result<LinuxBoot>& b) {
    if (!b) return;
    in_ram(b->entry);
    in_ram(b->boot_params, 4096);
    if (b->initrd_size) in_ram(b->initrd_addr, b->initrd_size);
}

uint8_t sum(std::span<const uint8_t> s) {
    uint8_t v = 0;
    for (uint8_t b : s) v = static_cast<uint8_t>(v + b);
    return v;
}

// Follows one table pointer; every byte of the table must be in the ACPI range.
std::span<const uint8_t> table(uint64_t gpa) {
    if (gpa < kAcpiBase || gpa + kSdtHeaderLength > kAcpiEnd) __builtin_trap();
    auto h = ram().slice(Gpa(gpa), kSdtHeaderLength);
    if (!h) __builtin_trap();
    uint32_t len;
    std::memcpy(&len, h->data() + 4, 4);
    if (len < kSdtHeaderLength || gpa + len > kAcpiEnd) __builtin_trap();
    auto t = ram().slice(Gpa(gpa), len);
    if (!t || sum(*t) != 0) __builtin_trap();
    return *t;
}

void acpi(std::span<const uint8_t> in) {
    if (in.size() < 2) return;
    AcpiConfig cfg{in[0], {}};
    size_t n = in[1], at = 2;
    for (size_t i = 0; i < n && at + 5 <= in.size(); ++i, at += 5) {
        uint32_t base;
        std::memcpy(&base, in.data() + at, 4);
        cfg.virtio.push_back({base, in[at + 4]});
    }
    auto rsdp = write_acpi_tables(ram(), cfg);
    if (!rsdp) return;
    auto r = ram().slice(Gpa(*rsdp), kRsdpLength);
    if (!r || sum(r->first(20)) != 0 || sum(*r) != 0) __builtin_trap();
    uint64_t xsdt_at;
    std::memcpy(&xsdt_at, r->data() + 24, 8);
    auto xsdt = table(xsdt_at);
    for (size_t off = kSdtHeaderLength; off + 8 <= xsdt.size(); off += 8) {
        uint64_t at_t;
        std::memcpy(&at_t, xsdt.data() + off, 8);
        auto t = table(at_t);
        if (std::memcmp(t.data(), "FACP", 4) == 0) {
            uint64_t dsdt;
            std::memcpy(&dsdt, t.data() + kFadtXDsdt, 8);
            table(dsdt);
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    const std::span<const uint8_t> file(data + 1, size - 1);
    static const std::vector<uint8_t> initrd(4096, 0x5a);
    const std::string cmdline = "console=ttyS0 fuzz";
    uint8_t mode = data[0] % 5;
    if (mode == 3) {
        switch (detect_kernel_format(file)) {
            case KernelFormat::PvhElf: mode = 0; break;
            case KernelFormat::BzImage: mode = 1; break;
            case KernelFormat::Elf: mode = 2; break;
            case KernelFormat::Unknown: return 0;
        }
    }
    switch (mode) {
        case 0: {
            auto b = load_pvh(ram(), file, std::span<const uint8_t>(initrd), cmdline, kAcpiBase);
            if (b) {
                in_ram(b->entry);
                in_ram(b->start_info, sizeof(HvmStartInfo));
            }
            break;
        }
        case 1: linux_boot(load_bzimage(ram(), file, std::span<const uint8_t>(initrd), cmdline, kAcpiBase)); break;
        case 2: linux_boot(load_vmlinux(ram(), file, std::nullopt, cmdline)); break;
        case 4: acpi(file); break;
    }
    return 0;
}
