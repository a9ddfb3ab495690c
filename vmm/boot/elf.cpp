#include "vmm/boot/elf.hpp"

#include <elf.h>

#include <algorithm>
#include <cstring>
#include <fmt/format.h>

namespace ferry {

namespace {

constexpr size_t kMaxPhdrs = 256;

template <class T>
std::optional<T> read_at(std::span<const uint8_t> f, uint64_t off) {
    if (off > f.size() || sizeof(T) > f.size() - off) return std::nullopt;
    T v;
    std::memcpy(&v, f.data() + off, sizeof(T));
    return v;
}

// Walks the notes in [off, off+size) of the file looking for Xen's PHYS32 entry.
Result<std::optional<uint32_t>> find_pvh_note(std::span<const uint8_t> f, uint64_t off, uint64_t size) {
    if (off > f.size() || size > f.size() - off) return fail(Domain::Loader, "ELF note segment lies outside the file");
    uint64_t pos = off, end = off + size;
    while (end - pos >= sizeof(Elf32_Nhdr)) {
        auto nh = read_at<Elf32_Nhdr>(f, pos);
        if (!nh) break;
        pos += sizeof(Elf32_Nhdr);
        uint64_t namesz = (uint64_t{nh->n_namesz} + 3) & ~uint64_t{3};
        uint64_t descsz = (uint64_t{nh->n_descsz} + 3) & ~uint64_t{3};
        if (namesz > end - pos || descsz > end - pos - namesz) return fail(Domain::Loader, "ELF note is truncated");
        bool xen = nh->n_namesz == 4 && std::memcmp(f.data() + pos, "Xen", 4) == 0;
        if (xen && nh->n_type == kXenElfnotePhys32Entry) {
            if (nh->n_descsz != 4 && nh->n_descsz != 8) return fail(Domain::Loader, "PVH entry note has a bad size");
            uint64_t entry = 0;
            std::memcpy(&entry, f.data() + pos + namesz, nh->n_descsz);
            if (entry > UINT32_MAX) return fail(Domain::Loader, "PVH entry point is above 4 GiB");
            return std::optional<uint32_t>(static_cast<uint32_t>(entry));
        }
        pos += namesz + descsz;
    }
    return std::optional<uint32_t>();
}

template <class Ehdr, class Phdr>
Result<ElfImage> parse_class(std::span<const uint8_t> f, bool is64) {
    auto eh = read_at<Ehdr>(f, 0);
    if (!eh) return fail(Domain::Loader, "ELF header is truncated");
    if (eh->e_machine != EM_X86_64 && eh->e_machine != EM_386) return fail(Domain::Loader, "ELF file is not for x86");
    if (eh->e_type != ET_EXEC) return fail(Domain::Loader, "ELF file is not an executable (ET_EXEC)");
    if (eh->e_phentsize != sizeof(Phdr)) return fail(Domain::Loader, "ELF program header size is wrong");
    if (eh->e_phnum == 0 || eh->e_phnum > kMaxPhdrs) return fail(Domain::Loader, fmt::format("ELF has {} program headers", eh->e_phnum));
    uint64_t phoff = eh->e_phoff;
    if (phoff > f.size() || uint64_t{eh->e_phnum} * sizeof(Phdr) > f.size() - phoff)
        return fail(Domain::Loader, "ELF program headers lie outside the file (truncated?)");

    ElfImage img{is64, eh->e_entry, std::nullopt, {}};
    for (unsigned i = 0; i < eh->e_phnum; ++i) {
        auto ph = *read_at<Phdr>(f, phoff + uint64_t{i} * sizeof(Phdr));
        if (ph.p_type == PT_NOTE && !img.pvh_entry) {
            auto note = find_pvh_note(f, ph.p_offset, ph.p_filesz);
            if (!note) return std::unexpected(note.error());
            img.pvh_entry = *note;
        }
        if (ph.p_type != PT_LOAD || ph.p_memsz == 0) continue;
        if (ph.p_filesz > ph.p_memsz) return fail(Domain::Loader, fmt::format("ELF segment {} has filesz > memsz", i));
        if (ph.p_offset > f.size() || ph.p_filesz > f.size() - ph.p_offset)
            return fail(Domain::Loader, fmt::format("ELF segment {} lies outside the file (truncated?)", i));
        if (ph.p_paddr + ph.p_memsz < ph.p_paddr) return fail(Domain::Loader, fmt::format("ELF segment {} wraps the address space", i));
        img.segments.push_back({ph.p_paddr, ph.p_offset, ph.p_filesz, ph.p_memsz});
    }
    if (img.segments.empty()) return fail(Domain::Loader, "ELF file has no loadable segment");
    return img;
}

}  // namespace

uint64_t ElfImage::lowest_paddr() const {
    uint64_t lo = UINT64_MAX;
    for (const auto& s : segments) lo = std::min(lo, s.paddr);
    return lo;
}

uint64_t ElfImage::highest_paddr_end() const {
    uint64_t hi = 0;
    for (const auto& s : segments) hi = std::max(hi, s.paddr + s.memsz);
    return hi;
}

Result<ElfImage> parse_elf(std::span<const uint8_t> f) {
    if (f.size() < EI_NIDENT || std::memcmp(f.data(), ELFMAG, SELFMAG) != 0) return fail(Domain::Loader, "not an ELF file");
    if (f[EI_DATA] != ELFDATA2LSB) return fail(Domain::Loader, "ELF file is not little-endian");
    if (f[EI_CLASS] == ELFCLASS64) return parse_class<Elf64_Ehdr, Elf64_Phdr>(f, true);
    if (f[EI_CLASS] == ELFCLASS32) return parse_class<Elf32_Ehdr, Elf32_Phdr>(f, false);
    return fail(Domain::Loader, "ELF file has an unknown class");
}

}  // namespace ferry
