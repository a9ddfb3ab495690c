#include "vmm/boot/linux.hpp"

#include <elf.h>

#include <algorithm>
#include <cstring>
#include <fmt/format.h>
#include <vector>

#include "vmm/boot/elf.hpp"
#include "vmm/boot/pvh.hpp"
#include "vmm/x86.hpp"

namespace ferry {

namespace {

constexpr uint64_t kSetupHeaderOffset = 0x1f1;                                  // boot_params.hdr
constexpr uint64_t kSetupHeaderEnd = kSetupHeaderOffset + sizeof(setup_header);  // 0x26c
constexpr uint64_t kMagicOffset = 0x202;
constexpr uint32_t kHdrSMagic = 0x53726448;  // "HdrS"
constexpr uint16_t kBootFlag = 0xaa55;
constexpr uint64_t kEntry64Offset = 0x200;   // 64-bit entry: load address + 0x200
constexpr uint16_t kProtocolXloadflags = 0x020c;
constexpr uint16_t kProtocolPrefAddress = 0x020a;  // pref_address, init_size
constexpr uint64_t kMaxKernelAlignment = 1ull << 30;
constexpr uint32_t kDefaultInitrdAddrMax = 0x37ffffff;  // boot.rst, for protocols that leave it 0
constexpr uint32_t kX86CommandLineSize = 2048;          // COMMAND_LINE_SIZE, NUL included
constexpr uint64_t kPage = 0x1000;
constexpr uint64_t k2M = 2ull << 20;
constexpr uint64_t kPtePresentRw = 0x3;
constexpr uint64_t kPtePs = 0x80;

// Offsets inside boot_params / the bzImage file (the setup header sits at the same
// offset in both), named after struct setup_header.
constexpr uint64_t hdr_off(uint64_t field) { return offsetof(boot_params, hdr) + field; }
constexpr uint64_t kOffSetupSects = hdr_off(offsetof(setup_header, setup_sects));
constexpr uint64_t kOffSyssize = hdr_off(offsetof(setup_header, syssize));
constexpr uint64_t kOffBootFlag = hdr_off(offsetof(setup_header, boot_flag));
constexpr uint64_t kOffJump = hdr_off(offsetof(setup_header, jump));
constexpr uint64_t kOffVersion = hdr_off(offsetof(setup_header, version));
constexpr uint64_t kOffLoadflags = hdr_off(offsetof(setup_header, loadflags));
constexpr uint64_t kOffInitrdAddrMax = hdr_off(offsetof(setup_header, initrd_addr_max));
constexpr uint64_t kOffKernelAlignment = hdr_off(offsetof(setup_header, kernel_alignment));
constexpr uint64_t kOffRelocatable = hdr_off(offsetof(setup_header, relocatable_kernel));
constexpr uint64_t kOffXloadflags = hdr_off(offsetof(setup_header, xloadflags));
constexpr uint64_t kOffCmdlineSize = hdr_off(offsetof(setup_header, cmdline_size));
constexpr uint64_t kOffPrefAddress = hdr_off(offsetof(setup_header, pref_address));
constexpr uint64_t kOffInitSize = hdr_off(offsetof(setup_header, init_size));
static_assert(kMagicOffset == hdr_off(offsetof(setup_header, header)));
static_assert(kOffInitSize + 4 <= kSetupHeaderEnd);

// Little-endian read; the caller has checked that [off, off+sizeof(T)) is in `f`.
template <class T>
T read_le(std::span<const uint8_t> f, uint64_t off) {
    T v;
    std::memcpy(&v, f.data() + off, sizeof(T));
    return v;
}

std::string protocol_name(uint16_t v) { return fmt::format("{}.{:02}", v >> 8, v & 0xff); }

bool is_pow2(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// End of the RAM that starts at guest-physical 0 and runs without a gap (over region
// boundaries, when memory zones split it) below 4 GiB: where the kernel, its
// working space and the initrd must lie.
uint64_t low_ram_end(const GuestMemory& mem) {
    uint64_t end = 0;
    for (bool grew = true; grew;) {
        grew = false;
        for (const auto& r : mem.regions()) {
            if (r.start.raw() == end && end < kIdentityMapEnd) {
                end = std::min(r.start.raw() + r.size(), kIdentityMapEnd);
                grew = true;
            }
        }
    }
    return end;
}

// Copies `src` (or writes zeros when src is empty) into [gpa, gpa+len), region by
// region: a range that crosses a region boundary is written in pieces, each through
// the bounds-checked accessor.
Result<void> fill_guest(const GuestMemory& mem, uint64_t gpa, uint64_t len, std::span<const uint8_t> src) {
    uint64_t done = 0;
    while (done < len) {
        uint64_t at = gpa + done;
        const MemoryRegion* region = nullptr;
        for (const auto& r : mem.regions())
            if (r.contains(Gpa(at))) region = &r;
        if (!region) return fail(Domain::Loader, fmt::format("{:#x}+{:#x} is not guest RAM", gpa, len));
        uint64_t n = std::min(len - done, region->start.raw() + region->size() - at);
        auto dst = mem.slice(Gpa(at), n);
        if (!dst) return std::unexpected(dst.error());
        if (src.empty()) std::memset(dst->data(), 0, n);
        else std::memcpy(dst->data(), src.data() + done, n);
        done += n;
    }
    return {};
}

Result<void> copy_to_guest(const GuestMemory& mem, uint64_t gpa, std::span<const uint8_t> bytes) {
    return fill_guest(mem, gpa, bytes.size(), bytes);
}

// GDT (boot.rst: __BOOT_CS = 0x10, __BOOT_DS = 0x18, flat 4 GiB) and the identity
// map of [0, 4 GiB) with 2 MiB pages.
Result<void> write_gdt_and_page_tables(const GuestMemory& mem) {
    const uint64_t gdt[] = {
        0,
        0,
        0x00af9b000000ffff,  // 0x10: code, 64-bit (L), present, DPL 0, execute/read
        0x00cf93000000ffff,  // 0x18: data, 4 GiB flat, read/write
        0x00008b0000000067,  // 0x20: TSS (busy), only for TR's cached descriptor
    };
    if (auto ok = mem.write_obj(Gpa(kLinuxGdtGpa), gdt); !ok) return ok;
    std::vector<uint64_t> tables((kLinuxBootInfoEnd - kPml4Gpa) / sizeof(uint64_t), 0);
    auto entry = [&](uint64_t table_gpa, size_t index) -> uint64_t& {
        return tables[(table_gpa - kPml4Gpa) / sizeof(uint64_t) + index];
    };
    entry(kPml4Gpa, 0) = kPdptGpa | kPtePresentRw;
    for (uint64_t gib = 0; gib < kIdentityMapEnd >> 30; ++gib) {
        uint64_t pd = kPdGpa + gib * kPage;
        entry(kPdptGpa, gib) = pd | kPtePresentRw;
        for (uint64_t i = 0; i < 512; ++i) entry(pd, i) = ((gib << 30) + i * k2M) | kPtePresentRw | kPtePs;
    }
    static_assert(kPdGpa + (kIdentityMapEnd >> 30) * kPage == kLinuxBootInfoEnd);
    // SAFETY: a vector of uint64_t viewed as its bytes, for the copy into guest RAM.
    std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(tables.data()), tables.size() * sizeof(uint64_t));
    return mem.write_bytes(Gpa(kPml4Gpa), bytes);
}

// What the bzImage and vmlinux paths share: the command line, the initrd, the e820
// map, the zero page itself, GDT and page tables.
struct CommonBoot {
    uint64_t kernel_end;      // the initrd goes above this
    uint64_t initrd_limit;    // ... and ends at or below this
    uint64_t cmdline_max;     // bytes without the NUL
};

Result<LinuxBoot> finish_boot(const GuestMemory& mem, boot_params& bp, LinuxBoot boot, const CommonBoot& c,
                              std::optional<std::span<const uint8_t>> initrd, const std::string& cmdline, uint64_t rsdp) {
    uint64_t cmdline_max = std::min<uint64_t>(c.cmdline_max, kCmdlineMax - 1);
    if (cmdline.size() > cmdline_max)
        return fail(Domain::Loader, fmt::format("command line is {} bytes; this kernel takes at most {}", cmdline.size(), cmdline_max));
    std::vector<uint8_t> cl(cmdline.begin(), cmdline.end());
    cl.push_back(0);
    if (auto ok = mem.write_bytes(Gpa(kCmdlineGpa), cl); !ok) return std::unexpected(ok.error());
    bp.hdr.type_of_loader = kLoaderTypeUndefined;
    bp.hdr.cmd_line_ptr = static_cast<uint32_t>(kCmdlineGpa);
    bp.ext_cmd_line_ptr = 0;
    bp.acpi_rsdp_addr = rsdp;

    if (initrd) {
        // As high as possible: below initrd_addr_max and the end of low RAM, page
        // aligned, above everything the kernel uses while it boots.
        uint64_t size = initrd->size();
        uint64_t at = size <= c.initrd_limit ? (c.initrd_limit - size) & ~(kPage - 1) : 0;
        if (size > c.initrd_limit || at < c.kernel_end)
            return fail(Domain::Loader, fmt::format("initrd of {} bytes does not fit in RAM between the kernel's end {:#x} and {:#x}",
                                                    size, c.kernel_end, c.initrd_limit));
        if (auto ok = copy_to_guest(mem, at, *initrd); !ok) return std::unexpected(ok.error());
        bp.hdr.ramdisk_image = static_cast<uint32_t>(at);
        bp.hdr.ramdisk_size = static_cast<uint32_t>(size);
        boot.initrd_addr = at;
        boot.initrd_size = size;
    }

    auto e820 = build_e820(mem);
    if (e820.size() > E820_MAX_ENTRIES_ZEROPAGE)
        return fail(Domain::Loader, fmt::format("memory map has {} entries; the zero page holds {}", e820.size(), E820_MAX_ENTRIES_ZEROPAGE));
    for (size_t i = 0; i < e820.size(); ++i) {
        bp.e820_table[i].addr = e820[i].addr;
        bp.e820_table[i].size = e820[i].size;
        bp.e820_table[i].type = static_cast<uint32_t>(e820[i].type);
    }
    bp.e820_entries = static_cast<uint8_t>(e820.size());

    if (auto ok = mem.write_obj(Gpa(kZeroPageGpa), bp); !ok) return std::unexpected(ok.error());
    if (auto ok = write_gdt_and_page_tables(mem); !ok) return std::unexpected(ok.error());
    boot.boot_params = kZeroPageGpa;
    return boot;
}

Result<uint64_t> checked_low_ram(const GuestMemory& mem) {
    uint64_t low_end = low_ram_end(mem);
    if (low_end <= kLinuxKernelMin)
        return fail(Domain::Loader, fmt::format("guest RAM from 0 ends at {:#x}; a Linux kernel needs RAM above 1 MiB", low_end));
    return low_end;
}

}  // namespace

KernelFormat detect_kernel_format(std::span<const uint8_t> f) {
    if (f.size() >= SELFMAG && std::memcmp(f.data(), ELFMAG, SELFMAG) == 0) {
        auto img = parse_elf(f);
        return img && img->pvh_entry ? KernelFormat::PvhElf : KernelFormat::Elf;
    }
    if (f.size() >= kMagicOffset + 4 && read_le<uint32_t>(f, kMagicOffset) == kHdrSMagic) return KernelFormat::BzImage;
    return KernelFormat::Unknown;
}

Result<BzImageHeader> parse_bzimage(std::span<const uint8_t> f) {
    if (f.size() < kMagicOffset + 4)
        return fail(Domain::Loader, fmt::format("bzImage is truncated: {} bytes, too short for a setup header", f.size()));
    if (read_le<uint32_t>(f, kMagicOffset) != kHdrSMagic) return fail(Domain::Loader, "not a bzImage: no \"HdrS\" magic at 0x202");
    if (f.size() < kSetupHeaderEnd)
        return fail(Domain::Loader, fmt::format("bzImage is truncated: {} bytes, the setup header ends at {:#x}", f.size(), kSetupHeaderEnd));
    BzImageHeader h;
    h.version = read_le<uint16_t>(f, kOffVersion);
    if (h.version < kMinBootProtocol)
        return fail(Domain::Loader, fmt::format("Linux boot protocol {} is too old: ferry needs {} or later",
                                                protocol_name(h.version), protocol_name(kMinBootProtocol)));
    if (read_le<uint16_t>(f, kOffBootFlag) != kBootFlag) return fail(Domain::Loader, "bzImage boot_flag is not 0xaa55");
    // The header ends at 0x202 + the jump's displacement byte (boot.rst).
    h.header_end = kMagicOffset + f[kOffJump + 1];
    if (h.header_end < kOffInitSize + 4)
        return fail(Domain::Loader, fmt::format("setup header ends at {:#x}, too short for protocol {}", h.header_end, protocol_name(h.version)));
    h.header_end = std::min(h.header_end, kSetupHeaderEnd);
    h.xloadflags = read_le<uint16_t>(f, kOffXloadflags);
    if (h.version < kProtocolXloadflags || !(h.xloadflags & XLF_KERNEL_64))
        return fail(Domain::Loader, fmt::format("bzImage has no 64-bit entry point (protocol {}, xloadflags {:#x}): ferry boots "
                                                "64-bit kernels (protocol 2.12+) through the 64-bit boot protocol",
                                                protocol_name(h.version), h.version < kProtocolXloadflags ? 0 : h.xloadflags));
    if (!(f[kOffLoadflags] & LOADED_HIGH)) return fail(Domain::Loader, "a zImage (loaded below 1 MiB) is not supported; build a bzImage");

    uint64_t sects = f[kOffSetupSects] == 0 ? 4 : f[kOffSetupSects];
    h.setup_size = (sects + 1) * 512;
    if (h.setup_size >= f.size())
        return fail(Domain::Loader, fmt::format("setup_sects {} puts the kernel at {:#x}, past the end of the {}-byte file", sects,
                                                h.setup_size, f.size()));
    h.kernel_size = uint64_t{read_le<uint32_t>(f, kOffSyssize)} * 16;
    if (h.kernel_size == 0) return fail(Domain::Loader, "bzImage syssize is 0: no protected-mode kernel");
    if (h.kernel_size > f.size() - h.setup_size)
        return fail(Domain::Loader, fmt::format("bzImage is truncated: the kernel is {} bytes after the {}-byte setup, the file has {}",
                                                h.kernel_size, h.setup_size, f.size() - h.setup_size));

    h.relocatable = f[kOffRelocatable] != 0;
    h.kernel_alignment = read_le<uint32_t>(f, kOffKernelAlignment);
    if (h.relocatable && (!is_pow2(h.kernel_alignment) || h.kernel_alignment > kMaxKernelAlignment))
        return fail(Domain::Loader, fmt::format("kernel_alignment {:#x} is not a power of two up to 1 GiB", h.kernel_alignment));
    h.cmdline_size = read_le<uint32_t>(f, kOffCmdlineSize);
    h.initrd_addr_max = read_le<uint32_t>(f, kOffInitrdAddrMax);
    if (h.initrd_addr_max == 0) h.initrd_addr_max = kDefaultInitrdAddrMax;
    static_assert(kProtocolPrefAddress <= kProtocolXloadflags);  // checked above: both fields exist
    h.pref_address = read_le<uint64_t>(f, kOffPrefAddress);
    h.init_size = read_le<uint32_t>(f, kOffInitSize);
    if (h.init_size == 0) return fail(Domain::Loader, "bzImage init_size is 0");
    return h;
}

Result<LinuxBoot> load_bzimage(const GuestMemory& mem, std::span<const uint8_t> kernel,
                               std::optional<std::span<const uint8_t>> initrd, const std::string& cmdline, uint64_t rsdp) {
    auto h = parse_bzimage(kernel);
    if (!h) return std::unexpected(h.error());
    auto low_end = checked_low_ram(mem);
    if (!low_end) return std::unexpected(low_end.error());

    // Load at the preferred address (then the kernel decompresses in place) when it
    // is above ferry's boot data, else at 1 MiB if the kernel can relocate. It runs
    // from max(align_up(load, kernel_alignment), pref_address) (compressed/head_64.S),
    // or pref_address if it is not relocatable, and needs init_size bytes there.
    uint64_t load = h->pref_address;
    if (load < kLinuxKernelMin) {
        if (!h->relocatable)
            return fail(Domain::Loader, fmt::format("kernel is not relocatable and must run at {:#x}, below 1 MiB where ferry keeps "
                                                    "its boot data", h->pref_address));
        load = kLinuxKernelMin;
    }
    if (load >= *low_end || h->kernel_size > *low_end - load)
        return fail(Domain::Loader, fmt::format("kernel of {} bytes at {:#x} does not fit in guest RAM (RAM below 4 GiB ends at {:#x})",
                                                h->kernel_size, load, *low_end));
    uint64_t runtime = h->pref_address;
    if (h->relocatable) {  // no overflow: load < 4 GiB, alignment <= 1 GiB
        uint64_t align = h->kernel_alignment;
        runtime = std::max((load + align - 1) & ~(align - 1), h->pref_address);
    }
    if (runtime >= *low_end || h->init_size > *low_end - runtime)
        return fail(Domain::Loader, fmt::format("kernel needs {} bytes (init_size) of RAM at {:#x}; RAM below 4 GiB ends at {:#x}",
                                                h->init_size, runtime, *low_end));
    if (auto ok = copy_to_guest(mem, load, kernel.subspan(h->setup_size, h->kernel_size)); !ok) return std::unexpected(ok.error());

    boot_params bp{};
    // SAFETY: boot_params is plain bytes (packed, trivially copyable); the header's
    // bytes [0x1f1, header_end) were checked to be inside the file.
    std::memcpy(reinterpret_cast<uint8_t*>(&bp) + kSetupHeaderOffset, kernel.data() + kSetupHeaderOffset,
                h->header_end - kSetupHeaderOffset);
    bp.hdr.code32_start = static_cast<uint32_t>(load);

    LinuxBoot boot;
    boot.load_addr = load;
    boot.entry = load + kEntry64Offset;
    boot.kernel_end = std::max(load + h->kernel_size, runtime + h->init_size);
    CommonBoot c{boot.kernel_end, std::min<uint64_t>(*low_end, uint64_t{h->initrd_addr_max} + 1), h->cmdline_size};
    return finish_boot(mem, bp, boot, c, initrd, cmdline, rsdp);
}

Result<LinuxBoot> load_vmlinux(const GuestMemory& mem, std::span<const uint8_t> kernel,
                               std::optional<std::span<const uint8_t>> initrd, const std::string& cmdline, uint64_t rsdp) {
    auto img = parse_elf(kernel);
    if (!img) return std::unexpected(img.error());
    if (!img->is64)
        return fail(Domain::Loader, "32-bit ELF kernel without a PVH note: ferry boots ELF kernels through their PVH note, or "
                                    "64-bit ones through the Linux 64-bit entry");
    auto low_end = checked_low_ram(mem);
    if (!low_end) return std::unexpected(low_end.error());
    bool entry_loaded = false;
    for (const auto& seg : img->segments) {
        if (seg.paddr < kLinuxKernelMin)
            return fail(Domain::Loader, fmt::format("kernel segment at {:#x} is below 1 MiB, where ferry keeps its boot data", seg.paddr));
        if (seg.paddr >= *low_end || seg.memsz > *low_end - seg.paddr)
            return fail(Domain::Loader, fmt::format("kernel segment {:#x}+{:#x} does not fit in guest RAM below {:#x}", seg.paddr,
                                                    seg.memsz, *low_end));
        if (auto ok = copy_to_guest(mem, seg.paddr, kernel.subspan(seg.offset, seg.filesz)); !ok) return std::unexpected(ok.error());
        if (auto ok = fill_guest(mem, seg.paddr + seg.filesz, seg.memsz - seg.filesz, {}); !ok) return std::unexpected(ok.error());
        if (img->entry >= seg.paddr && img->entry - seg.paddr < seg.filesz) entry_loaded = true;
    }
    if (!entry_loaded)
        return fail(Domain::Loader, fmt::format("ELF entry {:#x} is not inside a loaded segment (a vmlinux enters at its physical "
                                                "startup_64)", img->entry));

    // No setup header in a vmlinux: write the fields the kernel reads.
    boot_params bp{};
    bp.hdr.boot_flag = kBootFlag;
    bp.hdr.header = kHdrSMagic;
    bp.hdr.version = kBootProtocolForVmlinux;
    bp.hdr.loadflags = LOADED_HIGH;
    bp.hdr.kernel_alignment = static_cast<uint32_t>(k2M);
    bp.hdr.cmdline_size = kX86CommandLineSize - 1;
    bp.hdr.initrd_addr_max = 0x7fffffff;
    bp.hdr.pref_address = img->lowest_paddr();
    bp.hdr.init_size = static_cast<uint32_t>(std::min<uint64_t>(img->highest_paddr_end() - img->lowest_paddr(), UINT32_MAX));
    bp.hdr.code32_start = static_cast<uint32_t>(img->lowest_paddr());

    LinuxBoot boot;
    boot.load_addr = img->lowest_paddr();
    boot.entry = img->entry;
    boot.kernel_end = img->highest_paddr_end();
    CommonBoot c{boot.kernel_end, std::min<uint64_t>(*low_end, uint64_t{bp.hdr.initrd_addr_max} + 1), bp.hdr.cmdline_size};
    return finish_boot(mem, bp, boot, c, initrd, cmdline, rsdp);
}

Result<void> setup_linux64_entry(Vcpu& vcpu, const LinuxBoot& boot) {
    auto sregs = vcpu.get_sregs();
    if (!sregs) return std::unexpected(sregs.error());
    kvm_segment code = flat_code_segment(true);
    kvm_segment data = flat_data_segment();
    sregs->cs = code;
    sregs->ds = sregs->es = sregs->fs = sregs->gs = sregs->ss = data;
    kvm_segment tr{};
    tr.limit = 0x67;
    tr.type = 0xb;  // busy TSS
    tr.present = 1;
    tr.selector = 0x20;
    sregs->tr = tr;
    sregs->gdt.base = kLinuxGdtGpa;
    sregs->gdt.limit = 5 * 8 - 1;
    sregs->idt.base = 0;
    sregs->idt.limit = 0;
    sregs->cr3 = kPml4Gpa;
    sregs->cr4 = 0x20;         // PAE
    sregs->cr0 = 0x80000011;   // PG | ET | PE
    sregs->efer = 0x500;       // LMA | LME
    if (auto ok = vcpu.set_sregs(*sregs); !ok) return ok;

    kvm_regs regs{};
    regs.rip = boot.entry;
    regs.rsi = boot.boot_params;
    regs.rsp = regs.rbp = kLinuxStackTop;
    regs.rflags = 0x2;  // interrupts off
    return vcpu.set_regs(regs);
}

std::string with_virtio_mmio_devices(const std::string& cmdline, size_t count, uint64_t base, uint64_t stride, uint32_t irq) {
    std::string out = cmdline;
    for (size_t i = 0; i < count; ++i) {
        if (!out.empty()) out += ' ';
        out += fmt::format("virtio_mmio.device=4K@{:#x}:{}", base + i * stride, irq + i);
    }
    return out;
}

bool cmdline_disables_acpi(const std::string& cmdline) {
    // Words up to a "--" (what follows is init's); the last acpi= word wins, as in Linux.
    bool off = false;
    size_t i = 0;
    while (i < cmdline.size()) {
        while (i < cmdline.size() && cmdline[i] == ' ') ++i;
        size_t end = cmdline.find(' ', i);
        if (end == std::string::npos) end = cmdline.size();
        std::string_view word(cmdline.data() + i, end - i);
        if (word == "--") break;
        if (word.starts_with("acpi=")) off = word == "acpi=off";
        i = end;
    }
    return off;
}

}  // namespace ferry
