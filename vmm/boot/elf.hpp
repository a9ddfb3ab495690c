// ELF kernel image parsing (ELF32 or ELF64, x86), done on untrusted bytes: every
// offset, size and count is checked against the file before it is used. Yields the
// loadable segments (by physical address) and the PVH entry point from the
// XEN_ELFNOTE_PHYS32_ENTRY note, if present.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "base/error.hpp"

namespace ferry {

struct ElfSegment {
    uint64_t paddr;
    uint64_t offset;  // into the file
    uint64_t filesz;
    uint64_t memsz;
};

struct ElfImage {
    bool is64;
    uint64_t entry;                        // e_entry (virtual)
    std::optional<uint32_t> pvh_entry;     // XEN_ELFNOTE_PHYS32_ENTRY
    std::vector<ElfSegment> segments;      // PT_LOAD, memsz > 0
    uint64_t lowest_paddr() const;
    uint64_t highest_paddr_end() const;    // one past the last byte
};

inline constexpr uint32_t kXenElfnotePhys32Entry = 18;

Result<ElfImage> parse_elf(std::span<const uint8_t> file);

}  // namespace ferry
