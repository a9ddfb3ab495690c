// The ELF/PVH loader on valid, truncated and hostile images.
#include <elf.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <random>
#include <vector>

#include "vmm/boot/elf.hpp"
#include "vmm/boot/pvh.hpp"
#include "tests/common/elf_builder.hpp"

using namespace ferry;
using ferry::test::ElfBuilder;

namespace {

struct TestRam {
    std::vector<uint8_t> buf = std::vector<uint8_t>(4 << 20, 0xcc);
    GuestMemory mem;
    TestRam() { REQUIRE(mem.add_region(Gpa(0), MmapRegion::borrowed(buf.data(), buf.size()))); }
};

}  // namespace

TEST_CASE("a valid PVH ELF loads and gets a version-1 start_info", "[elf]") {
    TestRam ram;
    auto file = ElfBuilder{}.build();
    auto boot = load_pvh(ram.mem, file, std::nullopt, "mode=idle wss=1M");
    REQUIRE(boot);
    CHECK(boot->entry == 0x100040);
    CHECK(boot->start_info == kStartInfoGpa);
    auto si = ram.mem.read_obj<HvmStartInfo>(Gpa(kStartInfoGpa));
    REQUIRE(si);
    CHECK(si->magic == kHvmStartMagic);
    CHECK(si->version == 1);
    CHECK(si->nr_modules == 0);
    CHECK(si->memmap_entries == 3);
    auto cl = ram.mem.slice(Gpa(si->cmdline_paddr), 17);
    REQUIRE(cl);
    CHECK(std::string(reinterpret_cast<char*>(cl->data())) == "mode=idle wss=1M");
    // Code copied, bss zeroed.
    CHECK(ram.buf[0x100000] == 0x90);
    CHECK(ram.buf[0x100000 + 64] == 0);
    CHECK(ram.buf[0x100000 + 64 + 0xfff] == 0);
    auto e0 = ram.mem.read_obj<HvmMemmapEntry>(Gpa(si->memmap_paddr));
    auto e2 = ram.mem.read_obj<HvmMemmapEntry>(Gpa(si->memmap_paddr + 2 * sizeof(HvmMemmapEntry)));
    CHECK(e0->addr == 0);
    CHECK(e0->size == 0x9fc00);
    CHECK(e2->addr == 0x100000);
    CHECK(e2->addr + e2->size == 4 << 20);
}

TEST_CASE("the initrd goes to the top of low RAM as module 0", "[elf]") {
    TestRam ram;
    std::vector<uint8_t> initrd(10000, 0xab);
    auto boot = load_pvh(ram.mem, ElfBuilder{}.build(), std::span<const uint8_t>(initrd), "");
    REQUIRE(boot);
    auto si = ram.mem.read_obj<HvmStartInfo>(Gpa(kStartInfoGpa));
    REQUIRE(si->nr_modules == 1);
    auto mod = ram.mem.read_obj<HvmModlistEntry>(Gpa(si->modlist_paddr));
    CHECK(mod->size == 10000);
    CHECK(mod->paddr % 4096 == 0);
    CHECK(mod->paddr + mod->size <= (4u << 20));
    CHECK(ram.buf[mod->paddr] == 0xab);
    std::vector<uint8_t> huge(5 << 20, 1);
    CHECK_FALSE(load_pvh(ram.mem, ElfBuilder{}.build(), std::span<const uint8_t>(huge), ""));
}

TEST_CASE("every truncation of a valid ELF fails cleanly", "[elf]") {
    TestRam ram;
    auto file = ElfBuilder{}.build();
    for (size_t len = 0; len < file.size(); ++len) {
        std::span<const uint8_t> cut(file.data(), len);
        INFO("length " << len);
        CHECK_FALSE(load_pvh(ram.mem, cut, std::nullopt, ""));
    }
}

TEST_CASE("hostile ELF headers are refused", "[elf]") {
    TestRam ram;
    auto msg = [&](std::vector<uint8_t> f) {
        auto r = load_pvh(ram.mem, f, std::nullopt, "");
        return r ? std::string("loaded") : r.error().message();
    };
    auto base = ElfBuilder{}.build();
    auto eh = [](std::vector<uint8_t>& f) { return reinterpret_cast<Elf64_Ehdr*>(f.data()); };
    auto load = [](std::vector<uint8_t>& f) { return reinterpret_cast<Elf64_Phdr*>(f.data() + sizeof(Elf64_Ehdr)); };

    CHECK(msg(std::vector<uint8_t>{'h', 'e', 'l', 'l', 'o'}).find("not an ELF") != std::string::npos);
    {
        auto f = base;
        eh(f)->e_phnum = 60000;
        CHECK(msg(f).find("program headers") != std::string::npos);
    }
    {
        auto f = base;
        eh(f)->e_phoff = UINT64_MAX - 8;
        CHECK(msg(f).find("outside the file") != std::string::npos);
    }
    {
        auto f = base;
        load(f)->p_offset = UINT64_MAX - 4;
        CHECK(msg(f).find("outside the file") != std::string::npos);
    }
    {
        auto f = base;
        load(f)->p_filesz = load(f)->p_memsz + 1;
        CHECK(msg(f).find("filesz > memsz") != std::string::npos);
    }
    {
        auto f = base;
        load(f)->p_paddr = UINT64_MAX - 16;
        CHECK(msg(f).find("wraps") != std::string::npos);
    }
    {
        auto f = base;
        load(f)->p_memsz = 64ull << 30;  // bigger than RAM
        CHECK(msg(f).find("does not fit") != std::string::npos);
    }
    {
        ElfBuilder b;
        b.paddr = 0x2000;  // over the boot information
        b.pvh_entry = 0x2000;
        CHECK(msg(b.build()).find("boot information") != std::string::npos);
    }
    {
        ElfBuilder b;
        b.with_note = false;
        CHECK(msg(b.build()).find("PVH") != std::string::npos);
    }
    {
        ElfBuilder b;
        b.pvh_entry = 0xf0000000;  // not RAM
        CHECK(msg(b.build()).find("entry") != std::string::npos);
    }
    {
        auto f = base;
        auto* nh = reinterpret_cast<Elf32_Nhdr*>(f.data() + 0x100);
        nh->n_namesz = 0xfffffff0;
        CHECK(msg(f).find("note") != std::string::npos);
    }
    {
        auto f = base;
        eh(f)->e_machine = EM_AARCH64;
        CHECK(msg(f).find("x86") != std::string::npos);
    }
    CHECK(msg(base) == "loaded");
    std::string long_cmdline(kCmdlineMax, 'x');
    auto r = load_pvh(ram.mem, base, std::nullopt, long_cmdline);
    REQUIRE_FALSE(r);
    CHECK(r.error().message().find("command line") != std::string::npos);
}

TEST_CASE("random corruption of an ELF never crashes the loader", "[elf]") {
    TestRam ram;
    auto base = ElfBuilder{}.build();
    std::mt19937 rng(42);
    int loaded = 0, refused = 0;
    for (int i = 0; i < 3000; ++i) {
        auto f = base;
        int flips = 1 + static_cast<int>(rng() % 8);
        for (int j = 0; j < flips; ++j) f[rng() % 0x100] = static_cast<uint8_t>(rng());
        // Any result, no crash; a refusal says why.
        auto r = load_pvh(ram.mem, f, std::nullopt, "");
        if (r) {
            ++loaded;
        } else {
            ++refused;
            CHECK_FALSE(r.error().message().empty());
        }
    }
    // The corruptions hit both outcomes.
    CHECK(refused > 0);
    CHECK(loaded > 0);
}
