// PVH boot: load an ELF kernel that carries a XEN_ELFNOTE_PHYS32_ENTRY note and
// build what the PVH boot ABI hands it in %ebx: struct hvm_start_info (version 1)
// with the command line, a module list (the initrd) and an e820-style memory map.
//
// Boot information below 1 MiB (guest-physical):
//   0x1000  hvm_start_info            0x1400  module list (1 entry)
//   0x2000  memory map (<= 128 x 24 B) 0x3000..0x7fff  command line (NUL-terminated)
// Kernel segments go where their p_paddr says (they may not touch 0..0x8000);
// the initrd goes at the top of RAM below 4 GiB.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "memory/guest_memory.hpp"

namespace ferry {

inline constexpr uint64_t kStartInfoGpa = 0x1000;
inline constexpr uint64_t kModlistGpa = 0x1400;
inline constexpr uint64_t kMemmapGpa = 0x2000;
inline constexpr uint64_t kCmdlineGpa = 0x3000;
inline constexpr uint64_t kCmdlineMax = 0x5000;  // bytes, NUL included
inline constexpr uint64_t kBootInfoEnd = 0x8000;
inline constexpr uint32_t kHvmStartMagic = 0x336ec578;

enum class E820Type : uint32_t { Ram = 1, Reserved = 2 };
struct E820Entry {
    uint64_t addr;
    uint64_t size;
    E820Type type;
};
// RAM [0, 0x9fc00), reserved [0x9fc00, 1 MiB), RAM [1 MiB, end of each region).
std::vector<E820Entry> build_e820(const GuestMemory& mem);

// The ABI structs (xen/include/public/arch-x86/hvm/start_info.h).
struct HvmStartInfo {
    uint32_t magic;
    uint32_t version;
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;
    uint64_t cmdline_paddr;
    uint64_t rsdp_paddr;
    uint64_t memmap_paddr;
    uint32_t memmap_entries;
    uint32_t reserved;
};
struct HvmModlistEntry {
    uint64_t paddr;
    uint64_t size;
    uint64_t cmdline_paddr;
    uint64_t reserved;
};
struct HvmMemmapEntry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
    uint32_t reserved;
};
static_assert(sizeof(HvmStartInfo) == 56 && sizeof(HvmModlistEntry) == 32 && sizeof(HvmMemmapEntry) == 24);

struct PvhBoot {
    uint32_t entry;       // 32-bit physical entry point
    uint32_t start_info;  // value for %ebx
};

// Loads `kernel` (the file's bytes) and writes the boot information. Fails with a
// clear message for a non-ELF file, a truncated or hostile one, an ELF without a
// PVH note, segments outside RAM, or a command line that is too long. `rsdp`: the
// ACPI RSDP's address for rsdp_paddr (0: none).
Result<PvhBoot> load_pvh(const GuestMemory& mem, std::span<const uint8_t> kernel,
                         std::optional<std::span<const uint8_t>> initrd, const std::string& cmdline, uint64_t rsdp = 0);

}  // namespace ferry
