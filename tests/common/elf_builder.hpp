// Builds small ELF64 kernels with a PVH note in memory, for the loader's unit
// tests and for hand-assembled guests in the KVM tests.
#pragma once

#include <elf.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace ferry::test {

inline constexpr uint32_t kPvhNoteType = 18;  // XEN_ELFNOTE_PHYS32_ENTRY

// A minimal ELF64: header, 2 program headers (PT_LOAD, PT_NOTE), a note, code.
struct ElfBuilder {
    uint64_t paddr = 0x100000;
    uint32_t pvh_entry = 0x100040;
    bool with_note = true;
    std::vector<uint8_t> code = std::vector<uint8_t>(64, 0x90);

    std::vector<uint8_t> build() const {
        std::vector<uint8_t> f(0x200, 0);
        Elf64_Ehdr eh{};
        std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
        eh.e_ident[EI_CLASS] = ELFCLASS64;
        eh.e_ident[EI_DATA] = ELFDATA2LSB;
        eh.e_ident[EI_VERSION] = EV_CURRENT;
        eh.e_type = ET_EXEC;
        eh.e_machine = EM_X86_64;
        eh.e_version = EV_CURRENT;
        eh.e_entry = paddr;
        eh.e_phoff = sizeof(Elf64_Ehdr);
        eh.e_ehsize = sizeof(Elf64_Ehdr);
        eh.e_phentsize = sizeof(Elf64_Phdr);
        eh.e_phnum = 2;
        std::memcpy(f.data(), &eh, sizeof(eh));

        const uint64_t note_off = 0x100, code_off = 0x180;
        Elf64_Phdr load{};
        load.p_type = PT_LOAD;
        load.p_offset = code_off;
        load.p_paddr = load.p_vaddr = paddr;
        load.p_filesz = code.size();
        load.p_memsz = code.size() + 0x1000;  // some bss
        Elf64_Phdr note{};
        note.p_type = with_note ? PT_NOTE : PT_NULL;
        note.p_offset = note_off;
        note.p_filesz = sizeof(Elf32_Nhdr) + 4 + 4;
        std::memcpy(f.data() + eh.e_phoff, &load, sizeof(load));
        std::memcpy(f.data() + eh.e_phoff + sizeof(load), &note, sizeof(note));

        Elf32_Nhdr nh{4, 4, kPvhNoteType};
        std::memcpy(f.data() + note_off, &nh, sizeof(nh));
        std::memcpy(f.data() + note_off + sizeof(nh), "Xen", 4);
        std::memcpy(f.data() + note_off + sizeof(nh) + 4, &pvh_entry, 4);
        std::memcpy(f.data() + code_off, code.data(), code.size());
        f.resize(code_off + code.size());
        return f;
    }
};

// 32-bit code for a PVH entry: xor eax,eax; mov dx,0x3f8; l: out dx,al; inc al; jmp l.
// Writes 0, 1, 2, ... to the serial port, one I/O exit per byte, for ever.
inline const std::vector<uint8_t> kSerialCounterLoop = {0x31, 0xc0, 0x66, 0xba, 0xf8, 0x03, 0xee, 0xfe, 0xc0, 0xeb, 0xfb};

// Writes a kernel whose PVH entry is the first byte of `code` to `path`; true if written.
inline bool write_raw_kernel(const std::string& path, const std::vector<uint8_t>& code) {
    ElfBuilder b;
    b.pvh_entry = static_cast<uint32_t>(b.paddr);
    b.code = code;
    auto elf = b.build();
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(elf.data()), static_cast<std::streamsize>(elf.size()));
    return static_cast<bool>(f);
}

}  // namespace ferry::test
