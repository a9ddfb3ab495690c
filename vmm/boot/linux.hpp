// Linux x86 boot protocol (Documentation/x86/boot.rst, "64-bit Boot Protocol"):
// a bzImage, or an uncompressed vmlinux (ELF) without a PVH note, is entered at its
// 64-bit entry in long mode with a zero page (struct boot_params) in %rsi.
//
// bzImage file:                              guest-physical, below 1 MiB:
//   0x000  boot sector (legacy, unused)        0x1000  boot_params (zero page, 4 KiB)
//   0x1f1  setup header (untrusted: every      0x2000  GDT: 0x10 code64, 0x18 data, 0x20 TSS
//          field checked before use)           0x3000..0x7fff  command line (NUL-terminated)
//   (setup_sects+1)*512: protected-mode        0x8ff0  initial %rsp (the kernel sets its own)
//          kernel, syssize*16 bytes, loaded    0x9000  PML4, 0xa000 PDPT, 0xb000..0xefff four
//          at pref_address (or 1 MiB),         page directories: 0..4 GiB identity-mapped
//          entered at load address + 0x200     with 2 MiB pages
// The kernel runs from max(align_up(load, kernel_alignment), pref_address) and needs
// init_size bytes there; the initrd goes at the top of low RAM, below initrd_addr_max
// and above that. The e820 map is build_e820() (vmm/boot/pvh.hpp); the MP table lies in
// the reserved [0x9fc00, 1 MiB) (vmm/boot/mptable.hpp).
//
// A vmlinux without a PVH note loads its PT_LOAD segments at their p_paddr (>= 1 MiB)
// and is entered at e_entry (phys_startup_64), with a zero page ferry fills in.
#pragma once

#include <asm/bootparam.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "base/error.hpp"
#include "memory/guest_memory.hpp"
#include "vmm/kvm.hpp"

namespace ferry {

inline constexpr uint64_t kZeroPageGpa = 0x1000;
inline constexpr uint64_t kLinuxGdtGpa = 0x2000;
inline constexpr uint64_t kLinuxStackTop = 0x8ff0;
inline constexpr uint64_t kPml4Gpa = 0x9000;
inline constexpr uint64_t kPdptGpa = 0xa000;
inline constexpr uint64_t kPdGpa = 0xb000;  // 4 pages
inline constexpr uint64_t kLinuxBootInfoEnd = 0xf000;
inline constexpr uint64_t kLinuxKernelMin = 0x100000;  // nothing of the kernel below 1 MiB
inline constexpr uint64_t kIdentityMapEnd = 4ull << 30;
inline constexpr uint8_t kLoaderTypeUndefined = 0xff;  // boot.rst: "undefined" boot loader
inline constexpr uint16_t kMinBootProtocol = 0x0206;
inline constexpr uint16_t kBootProtocolForVmlinux = 0x020f;  // what ferry writes for a vmlinux

static_assert(sizeof(boot_params) == 4096);
static_assert(offsetof(boot_params, hdr) == 0x1f1 && offsetof(boot_params, e820_table) == 0x2d0);

enum class KernelFormat { PvhElf, Elf, BzImage, Unknown };
// ELF with a PVH note, other ELF, bzImage ("HdrS" at 0x202), or neither.
KernelFormat detect_kernel_format(std::span<const uint8_t> file);

// The setup header fields the loader uses, after validation.
struct BzImageHeader {
    uint16_t version = 0;
    uint64_t setup_size = 0;    // (setup_sects + 1) * 512: where the protected-mode kernel starts
    uint64_t kernel_size = 0;   // syssize * 16: the protected-mode kernel's bytes
    uint64_t header_end = 0;    // 0x202 + byte at 0x201, capped to boot_params' header
    bool relocatable = false;
    uint32_t kernel_alignment = 0;
    uint16_t xloadflags = 0;
    uint32_t cmdline_size = 0;  // without the NUL
    uint32_t initrd_addr_max = 0;
    uint64_t pref_address = 0;
    uint32_t init_size = 0;
};
// Validates the setup header of a bzImage: one clear message for a truncated file,
// a bad magic, a protocol older than 2.06, a kernel without the 64-bit entry
// (xloadflags.XLF_KERNEL_64, protocol 2.12+), bad sizes or alignment.
Result<BzImageHeader> parse_bzimage(std::span<const uint8_t> file);

struct LinuxBoot {
    uint64_t entry = 0;        // %rip, in the identity map
    uint64_t boot_params = 0;  // %rsi
    uint64_t load_addr = 0;    // where the kernel's bytes went
    uint64_t kernel_end = 0;   // one past what the kernel may use while booting
    uint64_t initrd_addr = 0, initrd_size = 0;
};

// Loads a bzImage, the initrd and the command line, and builds the zero page, GDT
// and page tables. Refuses, with one line, what cannot boot: see parse_bzimage, and
// a kernel, init_size or initrd that does not fit in RAM below 4 GiB, a kernel that
// would have to move but is not relocatable, a command line longer than the kernel
// takes. `rsdp`: the ACPI RSDP's address for the zero page's acpi_rsdp_addr (0: none).
Result<LinuxBoot> load_bzimage(const GuestMemory& mem, std::span<const uint8_t> kernel,
                               std::optional<std::span<const uint8_t>> initrd, const std::string& cmdline, uint64_t rsdp = 0);

// The same for an ELF vmlinux without a PVH note: segments at p_paddr, entry e_entry.
Result<LinuxBoot> load_vmlinux(const GuestMemory& mem, std::span<const uint8_t> kernel,
                               std::optional<std::span<const uint8_t>> initrd, const std::string& cmdline, uint64_t rsdp = 0);

// Register state of the 64-bit boot protocol: long mode, paging on (CR3 = kPml4Gpa),
// CS = 0x10 flat 64-bit code, DS/ES/SS/FS/GS = 0x18 flat data, interrupts off,
// %rsi = boot_params.
Result<void> setup_linux64_entry(Vcpu& vcpu, const LinuxBoot& boot);

// `cmdline` with " virtio_mmio.device=4K@0x<base + i*stride>:<irq + i>" appended for
// each of `count` virtio-mmio devices (how Linux learns of them without ACPI/DT).
// ferry appends them when the guest gets no ACPI tables, or is told to ignore them.
std::string with_virtio_mmio_devices(const std::string& cmdline, size_t count, uint64_t base, uint64_t stride, uint32_t irq);
// Whether `cmdline` has the word acpi=off (Linux then ignores the ACPI tables).
bool cmdline_disables_acpi(const std::string& cmdline);

}  // namespace ferry
