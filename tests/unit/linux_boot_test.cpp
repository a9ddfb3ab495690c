// The Linux boot protocol loader (bzImage, vmlinux), the MP table, the CMOS RTC and
// the kvmclock CPUID leaves, checked against Documentation/x86/boot.rst,
// zero-page.rst and the Intel MP spec 1.4; plus truncated, hostile and randomly
// corrupted bzImages, which must be refused (or loaded) without a crash.
#include <asm/bootparam.h>
#include <linux/kvm_para.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <ctime>
#include <random>
#include <vector>

#include "devices/rtc.hpp"
#include "tests/common/elf_builder.hpp"
#include "vmm/boot/linux.hpp"
#include "vmm/boot/mptable.hpp"
#include "vmm/boot/pvh.hpp"
#include "vmm/x86.hpp"

using namespace ferry;

namespace {

constexpr uint64_t kMiB = 1ull << 20;

struct TestRam {
    std::vector<uint8_t> buf;
    GuestMemory mem;
    explicit TestRam(uint64_t size = 32 * kMiB) : buf(size, 0) {
        REQUIRE(mem.add_region(Gpa(0), MmapRegion::borrowed(buf.data(), buf.size())));
    }
    boot_params zero_page() const {
        auto bp = mem.read_obj<boot_params>(Gpa(kZeroPageGpa));
        REQUIRE(bp);
        return *bp;
    }
    std::string cstring(uint64_t gpa) const { return std::string(reinterpret_cast<const char*>(buf.data() + gpa)); }
    uint64_t u64(uint64_t gpa) const {
        uint64_t v;
        std::memcpy(&v, buf.data() + gpa, 8);
        return v;
    }
};

// A synthetic bzImage: 4 setup sectors + the boot sector, then `kernel_size` bytes of
// "protected-mode kernel" (a byte pattern), with a protocol 2.15 setup header.
struct BzImageBuilder {
    uint16_t version = 0x020f;
    uint8_t setup_sects = 4;
    uint64_t kernel_size = 0x2000;
    bool relocatable = true;
    uint32_t kernel_alignment = 0x200000;
    uint16_t xloadflags = XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G;
    uint32_t cmdline_size = 2047;
    uint32_t initrd_addr_max = 0x7fffffff;
    uint64_t pref_address = 0x1000000;
    uint32_t init_size = 0x400000;

    std::vector<uint8_t> build() const {
        uint64_t setup = (uint64_t{setup_sects == 0 ? 4u : setup_sects} + 1) * 512;
        std::vector<uint8_t> f(setup + kernel_size, 0);
        setup_header h{};
        h.setup_sects = setup_sects;
        h.syssize = static_cast<uint32_t>(kernel_size / 16);
        h.boot_flag = 0xaa55;
        h.jump = 0x66eb;  // jmp short: the header ends at 0x202 + 0x66 = 0x268
        h.header = 0x53726448;
        h.version = version;
        h.loadflags = LOADED_HIGH;
        h.initrd_addr_max = initrd_addr_max;
        h.kernel_alignment = kernel_alignment;
        h.relocatable_kernel = relocatable;
        h.min_alignment = 21;
        h.xloadflags = xloadflags;
        h.cmdline_size = cmdline_size;
        h.pref_address = pref_address;
        h.init_size = init_size;
        h.kernel_version = 0x1234;  // an arbitrary field the loader must copy untouched
        std::memcpy(f.data() + 0x1f1, &h, sizeof(h));
        for (uint64_t i = 0; i < kernel_size; ++i) f[setup + i] = static_cast<uint8_t>(i * 7 + 1);
        return f;
    }
};

std::string load_error(const std::vector<uint8_t>& f, uint64_t ram = 32 * kMiB) {
    TestRam r(ram);
    auto boot = load_bzimage(r.mem, f, std::nullopt, "console=ttyS0");
    return boot ? "loaded" : boot.error().message();
}

bool contains(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

}  // namespace

TEST_CASE("a bzImage loads at pref_address with a zero page as boot.rst says", "[linux]") {
    TestRam ram;
    BzImageBuilder b;
    auto file = b.build();
    auto boot = load_bzimage(ram.mem, file, std::nullopt, "console=ttyS0 ferry-marker");
    REQUIRE(boot);
    CHECK(boot->load_addr == 0x1000000);
    CHECK(boot->entry == 0x1000200);  // 64-bit entry: load address + 0x200
    CHECK(boot->boot_params == kZeroPageGpa);
    CHECK(boot->kernel_end == 0x1000000 + 0x400000);

    // The protected-mode kernel (after the setup sectors) went to the load address.
    CHECK(std::memcmp(ram.buf.data() + 0x1000000, file.data() + 5 * 512, b.kernel_size) == 0);

    auto bp = ram.zero_page();
    // The setup header is copied from the image; the loader-written fields are set.
    CHECK(bp.hdr.header == 0x53726448);
    CHECK(bp.hdr.version == 0x020f);
    CHECK(bp.hdr.kernel_version == 0x1234);
    CHECK(bp.hdr.init_size == 0x400000);
    CHECK(bp.hdr.pref_address == 0x1000000);
    CHECK(bp.hdr.xloadflags == (XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G));
    CHECK(bp.hdr.type_of_loader == 0xff);
    CHECK(bp.hdr.cmd_line_ptr == kCmdlineGpa);
    CHECK(bp.hdr.ramdisk_image == 0);
    CHECK(bp.hdr.ramdisk_size == 0);
    CHECK(bp.sentinel == 0);  // not copied: the kernel would zero parts of boot_params
    CHECK(bp.acpi_rsdp_addr == 0);  // no ACPI tables given
    CHECK(ram.cstring(bp.hdr.cmd_line_ptr) == "console=ttyS0 ferry-marker");
    // With ACPI tables, the zero page says where their RSDP is.
    REQUIRE(load_bzimage(ram.mem, file, std::nullopt, "", 0xe0000));
    CHECK(ram.zero_page().acpi_rsdp_addr == 0xe0000);

    // e820 from build_e820: RAM below the EBDA, reserved EBDA..1 MiB, RAM above.
    REQUIRE(bp.e820_entries == 3);
    CHECK(bp.e820_table[0].addr == 0);
    CHECK(bp.e820_table[0].size == 0x9fc00);
    CHECK(bp.e820_table[0].type == 1);
    CHECK(bp.e820_table[1].addr == 0x9fc00);
    CHECK(bp.e820_table[1].size == 0x100000 - 0x9fc00);
    CHECK(bp.e820_table[1].type == 2);
    CHECK(bp.e820_table[2].addr == 0x100000);
    CHECK(bp.e820_table[2].size == 31 * kMiB);
    CHECK(bp.e820_table[2].type == 1);

    // GDT: __BOOT_CS 0x10 (64-bit code), __BOOT_DS 0x18 (flat data).
    CHECK(ram.u64(kLinuxGdtGpa + 0x10) == 0x00af9b000000ffff);
    CHECK(ram.u64(kLinuxGdtGpa + 0x18) == 0x00cf93000000ffff);
    // Identity map: PML4[0] -> PDPT, PDPT[i] -> PD i, 2 MiB pages.
    CHECK(ram.u64(kPml4Gpa) == (kPdptGpa | 3));
    CHECK(ram.u64(kPdptGpa + 3 * 8) == ((kPdGpa + 3 * 0x1000) | 3));
    CHECK(ram.u64(kPdGpa + 8 * 8) == (0x1000000 | 0x83));              // 16 MiB
    CHECK(ram.u64(kPdGpa + 3 * 0x1000 + 511 * 8) == (0xffe00000 | 0x83));  // last 2 MiB below 4 GiB
}

TEST_CASE("the initrd goes high, below initrd_addr_max and above the kernel", "[linux]") {
    std::vector<uint8_t> initrd(10000, 0x5a);
    {
        TestRam ram;
        auto boot = load_bzimage(ram.mem, BzImageBuilder{}.build(), std::span<const uint8_t>(initrd), "");
        REQUIRE(boot);
        auto bp = ram.zero_page();
        uint64_t expect = (32 * kMiB - initrd.size()) & ~0xfffull;
        CHECK(bp.hdr.ramdisk_image == expect);
        CHECK(bp.hdr.ramdisk_size == initrd.size());
        CHECK(boot->initrd_addr == expect);
        CHECK(ram.buf[expect] == 0x5a);
        CHECK(ram.buf[expect + initrd.size() - 1] == 0x5a);
        CHECK(ram.cstring(bp.hdr.cmd_line_ptr).empty());
    }
    {
        TestRam ram;
        BzImageBuilder b;
        b.initrd_addr_max = 24 * kMiB - 1;
        REQUIRE(load_bzimage(ram.mem, b.build(), std::span<const uint8_t>(initrd), ""));
        CHECK(ram.zero_page().hdr.ramdisk_image == ((24 * kMiB - initrd.size()) & ~0xfffull));
    }
    {
        // Between the kernel's init_size end (20 MiB) and 32 MiB there are 12 MiB.
        TestRam ram;
        std::vector<uint8_t> big(13 * kMiB, 1);
        auto boot = load_bzimage(ram.mem, BzImageBuilder{}.build(), std::span<const uint8_t>(big), "");
        REQUIRE_FALSE(boot);
        CHECK(contains(boot.error().message(), "initrd"));
    }
}

TEST_CASE("where a bzImage goes: pref_address, 1 MiB, or refused", "[linux]") {
    {
        TestRam ram;
        BzImageBuilder b;
        b.pref_address = 0;  // relocatable, no preference: 1 MiB
        auto boot = load_bzimage(ram.mem, b.build(), std::nullopt, "");
        REQUIRE(boot);
        CHECK(boot->load_addr == 0x100000);
        CHECK(boot->entry == 0x100200);
        CHECK(boot->kernel_end == 0x200000 + 0x400000);  // runs at align_up(1 MiB, 2 MiB)
    }
    {
        BzImageBuilder b;
        b.pref_address = 0x10000;
        b.relocatable = false;
        CHECK(contains(load_error(b.build()), "not relocatable"));
    }
    {
        BzImageBuilder b;
        b.relocatable = false;  // not relocatable but at a fine address: loads
        CHECK(load_error(b.build()) == "loaded");
    }
    {
        BzImageBuilder b;
        b.init_size = 0xf0000000;  // huge init_size
        CHECK(contains(load_error(b.build()), "init_size"));
    }
    {
        BzImageBuilder b;
        b.pref_address = 0xfffffffffff00000ull;  // hostile: far above RAM
        CHECK(contains(load_error(b.build()), "does not fit"));
    }
    {
        BzImageBuilder b;
        CHECK(contains(load_error(b.build(), 16 * kMiB), "does not fit"));  // RAM ends at pref_address
        CHECK(contains(load_error(b.build(), 18 * kMiB), "init_size"));     // kernel fits, init_size does not
    }
    {
        BzImageBuilder b;
        b.kernel_alignment = 0x300000;
        CHECK(contains(load_error(b.build()), "kernel_alignment"));
    }
    {
        BzImageBuilder b;
        b.cmdline_size = 8;
        TestRam ram;
        auto boot = load_bzimage(ram.mem, b.build(), std::nullopt, "console=ttyS0");
        REQUIRE_FALSE(boot);
        CHECK(contains(boot.error().message(), "command line"));
    }
}

TEST_CASE("bzImages that cannot boot are refused with one clear line", "[linux]") {
    auto base = BzImageBuilder{}.build();
    {
        BzImageBuilder b;
        b.version = 0x0205;
        CHECK(contains(load_error(b.build()), "too old"));
    }
    {
        BzImageBuilder b;
        b.version = 0x020a;  // no xloadflags yet: no known 64-bit entry
        CHECK(contains(load_error(b.build()), "64-bit"));
    }
    {
        BzImageBuilder b;
        b.xloadflags = 0;
        CHECK(contains(load_error(b.build()), "64-bit"));
    }
    {
        auto f = base;
        f[0x202] = 'X';
        CHECK(contains(load_error(f), "HdrS"));
    }
    {
        auto f = base;
        f[0x1fe] = 0;
        CHECK(contains(load_error(f), "boot_flag"));
    }
    {
        auto f = base;
        f[0x1f1] = 200;  // setup_sects: the kernel would start past the end of the file
        CHECK(contains(load_error(f), "setup_sects"));
    }
    {
        auto f = base;
        f[0x201] = 0x10;  // header ends at 0x212
        CHECK(contains(load_error(f), "setup header"));
    }
    {
        auto f = base;
        f[0x211] = 0;  // loadflags: zImage
        CHECK(contains(load_error(f), "zImage"));
    }
    {
        auto f = base;
        std::memset(f.data() + 0x1f4, 0xff, 4);  // syssize far past the file
        CHECK(contains(load_error(f), "truncated"));
    }
    {
        auto f = base;
        std::memset(f.data() + 0x1f4, 0, 4);
        CHECK(contains(load_error(f), "syssize"));
    }
    {
        auto f = base;
        std::memset(f.data() + 0x260, 0, 4);
        CHECK(contains(load_error(f), "init_size"));
    }
}

TEST_CASE("a bzImage truncated at every length is refused, never loaded", "[linux]") {
    TestRam ram;
    auto f = BzImageBuilder{}.build();
    size_t refused = 0;
    for (size_t len = 0; len < f.size(); ++len) {
        std::span<const uint8_t> prefix(f.data(), len);
        if (!load_bzimage(ram.mem, prefix, std::nullopt, "")) ++refused;
    }
    CHECK(refused == f.size());
    CHECK(load_bzimage(ram.mem, f, std::nullopt, ""));
}

TEST_CASE("random corruption of a bzImage never crashes the loader", "[linux]") {
    TestRam ram;
    auto base = BzImageBuilder{}.build();
    std::mt19937 rng(7);
    int loaded = 0;
    for (int i = 0; i < 4000; ++i) {
        auto f = base;
        int flips = 1 + static_cast<int>(rng() % 6);
        for (int j = 0; j < flips; ++j) {
            // Mostly the setup header, sometimes anywhere.
            size_t at = (rng() % 4) ? 0x1f1 + rng() % (0x26c - 0x1f1) : rng() % f.size();
            f[at] = static_cast<uint8_t>(rng());
        }
        auto boot = load_bzimage(ram.mem, f, std::nullopt, "x");
        if (boot) {
            ++loaded;
            CHECK(boot->entry >= 0x100000);
            CHECK(boot->kernel_end <= ram.buf.size());
        } else {
            CHECK_FALSE(boot.error().message().empty());
        }
    }
    CHECK(loaded > 0);  // harmless flips (e.g. in fields the loader copies) still load
}

TEST_CASE("kernel formats are told apart", "[linux]") {
    auto pvh = ferry::test::ElfBuilder{}.build();
    ferry::test::ElfBuilder nonote;
    nonote.with_note = false;
    CHECK(detect_kernel_format(pvh) == KernelFormat::PvhElf);
    CHECK(detect_kernel_format(nonote.build()) == KernelFormat::Elf);
    CHECK(detect_kernel_format(BzImageBuilder{}.build()) == KernelFormat::BzImage);
    std::vector<uint8_t> text(1000, 'x');
    CHECK(detect_kernel_format(text) == KernelFormat::Unknown);
    CHECK(detect_kernel_format({}) == KernelFormat::Unknown);
}

TEST_CASE("a vmlinux without a PVH note gets a zero page and enters at e_entry", "[linux]") {
    TestRam ram;
    ferry::test::ElfBuilder b;
    b.with_note = false;
    b.paddr = 0x1000000;
    auto boot = load_vmlinux(ram.mem, b.build(), std::nullopt, "console=ttyS0 vm");
    REQUIRE(boot);
    CHECK(boot->entry == 0x1000000);  // e_entry = phys_startup_64 in a real vmlinux
    CHECK(boot->boot_params == kZeroPageGpa);
    CHECK(ram.buf[0x1000000] == 0x90);
    auto bp = ram.zero_page();
    CHECK(bp.hdr.header == 0x53726448);
    CHECK(bp.hdr.boot_flag == 0xaa55);
    CHECK(bp.hdr.version == kBootProtocolForVmlinux);
    CHECK(bp.hdr.type_of_loader == 0xff);
    CHECK(ram.cstring(bp.hdr.cmd_line_ptr) == "console=ttyS0 vm");
    CHECK(bp.e820_entries == 3);

    ferry::test::ElfBuilder low;
    low.with_note = false;
    low.paddr = 0x8000;  // over ferry's boot data
    auto refused = load_vmlinux(ram.mem, low.build(), std::nullopt, "");
    REQUIRE_FALSE(refused);
    CHECK(contains(refused.error().message(), "below 1 MiB"));

    ferry::test::ElfBuilder high;
    high.with_note = false;
    high.paddr = 0x40000000;  // past the 32 MiB of RAM
    refused = load_vmlinux(ram.mem, high.build(), std::nullopt, "");
    REQUIRE_FALSE(refused);
    CHECK(contains(refused.error().message(), "does not fit"));
}

TEST_CASE("the MP table has valid checksums and describes the vCPUs, bus, IOAPIC and IRQs", "[linux]") {
    const uint32_t cpus = 3;
    auto t = build_mptable(cpus);
    MpFloatingPointer fp;
    std::memcpy(&fp, t.data(), sizeof(fp));
    CHECK(std::memcmp(fp.signature, "_MP_", 4) == 0);
    CHECK(fp.length == 1);
    CHECK(fp.spec_rev == 4);
    CHECK(fp.features[0] == 0);  // a configuration table follows
    CHECK(mp_checksum(std::span<const uint8_t>(t.data(), 16)) == 0);
    REQUIRE(fp.config_table == kMpTableGpa + 16);

    const uint8_t* cfg = t.data() + 16;
    MpConfigHeader h;
    std::memcpy(&h, cfg, sizeof(h));
    CHECK(std::memcmp(h.signature, "PCMP", 4) == 0);
    CHECK(h.spec_rev == 4);
    CHECK(h.lapic_addr == 0xfee00000);
    REQUIRE(16u + h.length == t.size());
    CHECK(mp_checksum(std::span<const uint8_t>(cfg, h.length)) == 0);
    CHECK(h.entry_count == cpus + 1 + 1 + 16 + 2);

    size_t off = sizeof(h);
    for (uint32_t i = 0; i < cpus; ++i, off += sizeof(MpProcessorEntry)) {
        MpProcessorEntry p;
        std::memcpy(&p, cfg + off, sizeof(p));
        CHECK(p.type == kMpProcessor);
        CHECK(p.lapic_id == i);
        CHECK((p.flags & kMpCpuEnabled) != 0);
        CHECK(((p.flags & kMpCpuBsp) != 0) == (i == 0));
    }
    MpBusEntry bus;
    std::memcpy(&bus, cfg + off, sizeof(bus));
    off += sizeof(bus);
    CHECK(bus.type == kMpBus);
    CHECK(std::memcmp(bus.bus_type, "ISA   ", 6) == 0);
    MpIoApicEntry io;
    std::memcpy(&io, cfg + off, sizeof(io));
    off += sizeof(io);
    CHECK(io.type == kMpIoApic);
    CHECK(io.id == cpus);
    CHECK(io.addr == 0xfec00000);
    CHECK(io.flags == 1);
    for (uint8_t irq = 0; irq < 16; ++irq, off += sizeof(MpInterruptEntry)) {
        MpInterruptEntry e;
        std::memcpy(&e, cfg + off, sizeof(e));
        CHECK(e.type == kMpIoInterrupt);
        CHECK(e.irq_type == kMpIrqInt);
        CHECK(e.src_bus == bus.bus_id);
        CHECK(e.src_irq == irq);
        CHECK(e.dst_apic == cpus);
        CHECK(e.dst_pin == irq);
    }
    MpInterruptEntry lint0, lint1;
    std::memcpy(&lint0, cfg + off, 8);
    std::memcpy(&lint1, cfg + off + 8, 8);
    CHECK(lint0.type == kMpLocalInterrupt);
    CHECK(lint0.irq_type == kMpIrqExtInt);
    CHECK(lint1.irq_type == kMpIrqNmi);
    CHECK(lint1.dst_pin == 1);
    CHECK(off + 16 == h.length);

    // In guest RAM, in the e820-reserved EBDA range, below 1 MiB even for 254 vCPUs.
    TestRam ram(2 * kMiB);
    REQUIRE(write_mptable(ram.mem, cpus));
    CHECK(std::memcmp(ram.buf.data() + kMpTableGpa, t.data(), t.size()) == 0);
    CHECK(write_mptable(ram.mem, kMpMaxCpus));
    CHECK_FALSE(write_mptable(ram.mem, 0));
    CHECK_FALSE(write_mptable(ram.mem, kMpMaxCpus + 1));
    CHECK(kMpTableGpa + build_mptable(kMpMaxCpus).size() <= 0x100000);
    CHECK(kMpTableGpa >= kBootInfoEnd);
    CHECK((kMpTableGpa >> 12) != 0x80);  // not the test guest's AP trampoline page
}

namespace {

struct RtcPorts {
    Rtc& rtc;
    uint8_t read(uint8_t reg) {
        uint8_t v = reg;
        rtc.write(0, std::span<const uint8_t>(&v, 1));
        rtc.read(1, std::span<uint8_t>(&v, 1));
        return v;
    }
    void write(uint8_t reg, uint8_t val) {
        rtc.write(0, std::span<const uint8_t>(&reg, 1));
        rtc.write(1, std::span<const uint8_t>(&val, 1));
    }
};

}  // namespace

TEST_CASE("the CMOS RTC reads the time in BCD and the memory sizes", "[linux]") {
    struct tm tm {};
    tm.tm_year = 2024 - 1900;
    tm.tm_mon = 1;  // February
    tm.tm_mday = 29;
    tm.tm_hour = 13;
    tm.tm_min = 45;
    tm.tm_sec = 56;
    int64_t now = timegm(&tm);  // a Thursday
    Rtc rtc(512 * kMiB, 1024 * kMiB, 2, [&] { return now; });
    RtcPorts p{rtc};

    CHECK(p.read(0x00) == 0x56);
    CHECK(p.read(0x02) == 0x45);
    CHECK(p.read(0x04) == 0x13);
    CHECK(p.read(0x06) == 5);  // Thursday (Sunday = 1)
    CHECK(p.read(0x07) == 0x29);
    CHECK(p.read(0x08) == 0x02);
    CHECK(p.read(0x09) == 0x24);
    CHECK(p.read(0x32) == 0x20);
    CHECK(p.read(0x0a) == 0x26);  // UIP clear, 32.768 kHz
    CHECK(p.read(0x0b) == 0x02);  // 24-hour, BCD
    CHECK(p.read(0x0c) == 0x00);
    CHECK(p.read(0x0d) == 0x80);  // valid RAM and time
    CHECK(p.read(0x8a) == 0x26);  // bit 7 of the index is the NMI mask

    // 512 MiB below 4 GiB, 1 GiB above.
    CHECK(p.read(0x30) == 0xff);  // (512 MiB - 1 MiB) / 1 KiB, capped at 0xffff
    CHECK(p.read(0x31) == 0xff);
    CHECK(p.read(0x17) == 0xff);
    CHECK(p.read(0x34) == 0x00);  // (512 - 16) MiB / 64 KiB = 0x1f00
    CHECK(p.read(0x35) == 0x1f);
    CHECK(p.read(0x5b) == 0x00);  // 1 GiB / 64 KiB = 0x4000
    CHECK(p.read(0x5c) == 0x40);
    CHECK(p.read(0x5d) == 0x00);
    CHECK(p.read(0x5f) == 1);  // vCPUs - 1

    Rtc small(20 * kMiB, 0, 1, [&] { return now; });
    RtcPorts s{small};
    CHECK((s.read(0x30) | s.read(0x31) << 8) == 19 * 1024);
    CHECK((s.read(0x34) | s.read(0x35) << 8) == 64);

    uint8_t idx = 0;
    rtc.read(0, std::span<uint8_t>(&idx, 1));
    CHECK(idx == 0xff);  // the index port is write-only
}

TEST_CASE("the CMOS RTC honours binary and 12-hour modes and time writes", "[linux]") {
    struct tm tm {};
    tm.tm_year = 2031 - 1900;
    tm.tm_mon = 11;
    tm.tm_mday = 31;
    tm.tm_hour = 23;
    tm.tm_min = 59;
    tm.tm_sec = 10;
    int64_t now = timegm(&tm);
    Rtc rtc(64 * kMiB, 0, 1, [&] { return now; });
    RtcPorts p{rtc};

    p.write(0x0b, 0x02 | 0x04);  // binary
    CHECK(p.read(0x04) == 23);
    CHECK(p.read(0x09) == 31);
    p.write(0x0b, 0x00);  // BCD, 12-hour
    CHECK(p.read(0x04) == (0x11 | 0x80));  // 11 PM
    p.write(0x0b, 0x02);

    p.write(0x04, 0x08);  // set the hour to 08
    CHECK(p.read(0x04) == 0x08);
    CHECK(p.read(0x02) == 0x59);
    CHECK(p.read(0x07) == 0x31);
    now += 60;  // the guest's clock runs on with the host's
    CHECK(p.read(0x02) == 0x00);
    CHECK(p.read(0x04) == 0x09);

    p.write(0x0d, 0x00);  // read-only
    CHECK(p.read(0x0d) == 0x80);
    p.write(0x40, 0xab);  // plain NVRAM
    CHECK(p.read(0x40) == 0xab);

    auto st = rtc.state();
    Rtc copy(64 * kMiB, 0, 1, [&] { return now; });
    copy.set_state(st);
    RtcPorts c{copy};
    CHECK(c.read(0x04) == 0x09);
    CHECK(c.read(0x40) == 0xab);
}

TEST_CASE("CPUID keeps KVM's paravirtual leaves, so kvmclock is visible", "[linux]") {
    std::vector<kvm_cpuid_entry2> entries(2);
    entries[0].function = KVM_CPUID_SIGNATURE;
    entries[0].eax = KVM_CPUID_FEATURES;
    entries[0].ebx = 0x4b4d564b;  // "KVMK"
    entries[1].function = KVM_CPUID_FEATURES;
    entries[1].eax = (1u << KVM_FEATURE_CLOCKSOURCE) | (1u << KVM_FEATURE_CLOCKSOURCE2) | (1u << KVM_FEATURE_CLOCKSOURCE_STABLE_BIT);
    CpuidTable supported(entries);
    auto t = build_cpuid(supported, 0, 1, 2000000);
    auto* sig = t.find(KVM_CPUID_SIGNATURE);
    auto* feat = t.find(KVM_CPUID_FEATURES);
    REQUIRE(sig);
    REQUIRE(feat);
    CHECK(sig->ebx == 0x4b4d564b);
    CHECK(sig->eax >= KVM_CPUID_FEATURES);
    CHECK(feat->eax == entries[1].eax);
}
