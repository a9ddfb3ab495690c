#include "vmm/boot/pvh.hpp"

#include <cstring>
#include <fmt/format.h>

#include "vmm/boot/elf.hpp"

namespace ferry {

std::vector<E820Entry> build_e820(const GuestMemory& mem) {
    std::vector<E820Entry> out;
    for (const auto& r : mem.regions()) {
        uint64_t start = r.start.raw(), end = start + r.size();
        if (start == 0 && end > 0x100000) {
            out.push_back({0, 0x9fc00, E820Type::Ram});
            out.push_back({0x9fc00, 0x100000 - 0x9fc00, E820Type::Reserved});
            out.push_back({0x100000, end - 0x100000, E820Type::Ram});
        } else {
            out.push_back({start, end - start, E820Type::Ram});
        }
    }
    return out;
}

Result<PvhBoot> load_pvh(const GuestMemory& mem, std::span<const uint8_t> kernel,
                         std::optional<std::span<const uint8_t>> initrd, const std::string& cmdline, uint64_t rsdp) {
    auto img = parse_elf(kernel);
    if (!img) return std::unexpected(img.error());
    if (!img->pvh_entry)
        return fail(Domain::Loader, "kernel ELF has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); ferry boots PVH ELF kernels");
    if (cmdline.size() + 1 > kCmdlineMax)
        return fail(Domain::Loader, fmt::format("command line is {} bytes; at most {} fit", cmdline.size(), kCmdlineMax - 1));

    for (const auto& seg : img->segments) {
        if (seg.paddr < kBootInfoEnd)
            return fail(Domain::Loader, fmt::format("kernel segment at {:#x} overlaps the boot information area", seg.paddr));
        auto dst = mem.slice(Gpa(seg.paddr), seg.memsz);
        if (!dst)
            return fail(Domain::Loader, fmt::format("kernel segment {:#x}+{:#x} does not fit in guest RAM", seg.paddr, seg.memsz));
        std::memcpy(dst->data(), kernel.data() + seg.offset, seg.filesz);
        std::memset(dst->data() + seg.filesz, 0, seg.memsz - seg.filesz);
    }
    uint64_t kernel_end = img->highest_paddr_end();
    if (!mem.slice(Gpa(img->pvh_entry.value()), 1))
        return fail(Domain::Loader, fmt::format("PVH entry {:#x} is not in guest RAM", *img->pvh_entry));

    HvmStartInfo si{};
    si.magic = kHvmStartMagic;
    si.version = 1;
    si.cmdline_paddr = kCmdlineGpa;
    si.rsdp_paddr = rsdp;

    std::vector<uint8_t> cl(cmdline.begin(), cmdline.end());
    cl.push_back(0);
    if (auto ok = mem.write_bytes(Gpa(kCmdlineGpa), cl); !ok) return std::unexpected(ok.error());

    if (initrd) {
        // Top of the RAM below 4 GiB, 4 KiB aligned, above the kernel.
        const auto& low = mem.regions().front();
        uint64_t low_end = low.start.raw() + low.size();
        uint64_t size = initrd->size();
        if (size > low_end || ((low_end - size) & ~uint64_t{0xfff}) < kernel_end)
            return fail(Domain::Loader, fmt::format("initrd of {} bytes does not fit in RAM below 4 GiB above the kernel", size));
        uint64_t at = (low_end - size) & ~uint64_t{0xfff};
        if (auto ok = mem.write_bytes(Gpa(at), *initrd); !ok) return std::unexpected(ok.error());
        HvmModlistEntry mod{at, size, 0, 0};
        if (auto ok = mem.write_obj(Gpa(kModlistGpa), mod); !ok) return std::unexpected(ok.error());
        si.nr_modules = 1;
        si.modlist_paddr = kModlistGpa;
    }

    auto e820 = build_e820(mem);
    if (e820.size() > (kCmdlineGpa - kMemmapGpa) / sizeof(HvmMemmapEntry)) return fail(Domain::Loader, "memory map too large");
    for (size_t i = 0; i < e820.size(); ++i) {
        HvmMemmapEntry e{e820[i].addr, e820[i].size, static_cast<uint32_t>(e820[i].type), 0};
        if (auto ok = mem.write_obj(Gpa(kMemmapGpa + i * sizeof(e)), e); !ok) return std::unexpected(ok.error());
    }
    si.memmap_paddr = kMemmapGpa;
    si.memmap_entries = static_cast<uint32_t>(e820.size());
    if (auto ok = mem.write_obj(Gpa(kStartInfoGpa), si); !ok) return std::unexpected(ok.error());
    return PvhBoot{*img->pvh_entry, static_cast<uint32_t>(kStartInfoGpa)};
}

}  // namespace ferry
