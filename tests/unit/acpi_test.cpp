// ferry's ACPI tables (vmm/boot/acpi.hpp) checked field by field against the ACPI 6.4
// layouts (§5.2.5 RSDP, §5.2.8 XSDT, §5.2.9 FADT, §5.2.12 MADT, §5.2.11.1 DSDT), the
// DSDT's AML decoded by a strict walker that accounts for every byte (§20), random
// configurations whose tables must all lie inside guest RAM and the reserved range,
// corruptions that the checksums catch, and the sleep/reset registers' device.
#include <catch2/catch.hpp>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "devices/platform.hpp"
#include "tests/common/elf_builder.hpp"
#include "vmm/boot/acpi.hpp"
#include "vmm/boot/aml.hpp"
#include "vmm/boot/linux.hpp"
#include "vmm/boot/mptable.hpp"
#include "vmm/boot/pvh.hpp"

using namespace ferry;

namespace {

uint64_t le(const std::vector<uint8_t>& b, size_t at, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= uint64_t{b.at(at + static_cast<size_t>(i))} << (8 * i);
    return v;
}
std::string chars(const std::vector<uint8_t>& b, size_t at, size_t n) { return std::string(b.begin() + at, b.begin() + at + n); }
uint8_t sum(const std::vector<uint8_t>& b, size_t from, size_t n) {
    uint8_t s = 0;
    for (size_t i = from; i < from + n; ++i) s = static_cast<uint8_t>(s + b.at(i));
    return s;
}

// One table out of the laid-out bytes: at `gpa`, as long as its header says.
std::vector<uint8_t> table_at(const AcpiTables& t, uint64_t gpa) {
    size_t off = gpa - t.base;
    size_t len = le(t.bytes, off + 4, 4);
    REQUIRE(off + len <= t.bytes.size());
    return std::vector<uint8_t>(t.bytes.begin() + static_cast<long>(off), t.bytes.begin() + static_cast<long>(off + len));
}

void check_header(const std::vector<uint8_t>& t, const std::string& sig, uint8_t revision) {
    REQUIRE(t.size() >= kSdtHeaderLength);
    CHECK(chars(t, 0, 4) == sig);
    CHECK(le(t, 4, 4) == t.size());
    CHECK(t[8] == revision);
    CHECK(sum(t, 0, t.size()) == 0);
    CHECK(chars(t, 10, 6) == "FERRY ");
    CHECK(chars(t, 16, 8) == "FERRYVM ");
    CHECK(chars(t, 28, 4) == "FRRY");
}

// A Generic Address Structure: space, bit width, bit offset, access size, address.
struct Gas {
    uint8_t space, width, offset, access;
    uint64_t address;
    bool operator==(const Gas&) const = default;
};
Gas gas(const std::vector<uint8_t>& t, size_t at) { return {t[at], t[at + 1], t[at + 2], t[at + 3], le(t, at + 4, 8)}; }

// A strict decoder of the AML ferry writes: Name, Scope, Device, and the data objects.
// Every byte must belong to an object and every PkgLength must end inside its parent;
// anything else fails the test. Named objects are recorded by their full path, e.g.
// "\_SB_.VR00._HID", with their encoded value.
struct AmlWalker {
    std::map<std::string, std::vector<uint8_t>> names;
    std::vector<std::string> devices;  // in order

    static size_t pkg_length(const std::vector<uint8_t>& b, size_t at, size_t& len) {
        REQUIRE(at < b.size());
        size_t extra = b[at] >> 6;
        if (extra == 0) {
            len = b[at] & 0x3f;
        } else {
            REQUIRE((b[at] & 0x30) == 0);  // reserved bits
            len = b[at] & 0x0f;
            for (size_t i = 1; i <= extra; ++i) len |= size_t{b.at(at + i)} << (4 + 8 * (i - 1));
        }
        return extra + 1;
    }
    static std::string name_seg(const std::vector<uint8_t>& b, size_t& at, const std::string& scope) {
        std::string path = scope;
        if (b.at(at) == aml::kRootChar) {
            path = "\\";
            ++at;
        }
        std::string seg = chars(b, at, 4);
        for (size_t i = 0; i < 4; ++i) {
            char c = seg[i];
            CHECK(((c >= 'A' && c <= 'Z') || c == '_' || (i > 0 && c >= '0' && c <= '9')));
        }
        at += 4;
        return path + (path.empty() || path == "\\" ? "" : ".") + seg;
    }
    // One data object (integer, string, package, buffer) at `at`; returns its end.
    static size_t data_object(const std::vector<uint8_t>& b, size_t at) {
        switch (b.at(at)) {
            case aml::kZeroOp:
            case aml::kOneOp: return at + 1;
            case aml::kBytePrefix: return at + 2;
            case aml::kWordPrefix: return at + 3;
            case aml::kDWordPrefix: return at + 5;
            case aml::kQWordPrefix: return at + 9;
            case aml::kStringPrefix: {
                size_t e = at + 1;
                while (b.at(e) != 0) {
                    CHECK(b[e] < 0x7f);
                    ++e;
                }
                return e + 1;
            }
            case aml::kPackageOp: {
                size_t len, n = pkg_length(b, at + 1, len);
                size_t end = at + 1 + len;
                REQUIRE(end <= b.size());
                size_t p = at + 1 + n + 1;
                size_t count = 0;
                while (p < end) p = data_object(b, p), ++count;
                CHECK(p == end);
                CHECK(count == b[at + 1 + n]);
                return end;
            }
            case aml::kBufferOp: {
                size_t len, n = pkg_length(b, at + 1, len);
                size_t end = at + 1 + len;
                REQUIRE(end <= b.size());
                const size_t size_at = at + 1 + n;  // BufferSize: an integer
                const size_t data = data_object(b, size_at);
                uint64_t size = b[size_at] == aml::kOneOp ? 1 : 0;
                if (b[size_at] == aml::kBytePrefix || b[size_at] == aml::kWordPrefix) size = le(b, size_at + 1, data - size_at - 1);
                CHECK(end - data == size);
                return end;
            }
            default: FAIL("unexpected AML data object opcode " << int(b[at]) << " at " << at); return b.size();
        }
    }
    void terms(const std::vector<uint8_t>& b, size_t at, size_t end, const std::string& scope) {
        while (at < end) {
            if (b[at] == aml::kNameOp) {
                size_t p = at + 1;
                std::string path = name_seg(b, p, scope);
                size_t e = data_object(b, p);
                names[path] = std::vector<uint8_t>(b.begin() + static_cast<long>(p), b.begin() + static_cast<long>(e));
                at = e;
            } else if (b[at] == aml::kScopeOp || (b[at] == aml::kExtOpPrefix && b.at(at + 1) == aml::kDeviceOp)) {
                const bool dev = b[at] == aml::kExtOpPrefix;
                size_t op = dev ? 2 : 1;
                size_t len, n = pkg_length(b, at + op, len);
                size_t pend = at + op + len;
                REQUIRE(pend <= end);
                size_t p = at + op + n;
                std::string path = name_seg(b, p, scope);
                if (dev) devices.push_back(path);
                terms(b, p, pend, path);
                at = pend;
            } else {
                FAIL("unexpected AML opcode " << int(b[at]) << " at " << at);
            }
        }
        CHECK(at == end);
    }
};

// A _CRS buffer's descriptors: (tag, body) pairs up to the end tag.
std::vector<std::pair<uint8_t, std::vector<uint8_t>>> resources(const std::vector<uint8_t>& buf) {
    REQUIRE(buf.at(0) == aml::kBufferOp);
    size_t len, n = AmlWalker::pkg_length(buf, 1, len);
    size_t p = AmlWalker::data_object(buf, 1 + n);
    std::vector<std::pair<uint8_t, std::vector<uint8_t>>> out;
    while (p < buf.size()) {
        uint8_t tag = buf[p];
        if (tag & 0x80) {
            size_t l = le(buf, p + 1, 2);
            out.emplace_back(tag, std::vector<uint8_t>(buf.begin() + static_cast<long>(p + 3), buf.begin() + static_cast<long>(p + 3 + l)));
            p += 3 + l;
        } else {
            size_t l = tag & 7;
            out.emplace_back(tag, std::vector<uint8_t>(buf.begin() + static_cast<long>(p + 1), buf.begin() + static_cast<long>(p + 1 + l)));
            p += 1 + l;
            if ((tag >> 3) == 0xf) break;
        }
    }
    CHECK(p == buf.size());
    return out;
}

AcpiConfig config(uint32_t cpus, size_t virtio) {
    AcpiConfig c{cpus, {}};
    for (size_t i = 0; i < virtio; ++i) c.virtio.push_back({0xd0000000 + i * 0x1000, static_cast<uint32_t>(5 + i)});
    return c;
}

struct TestRam {
    std::vector<uint8_t> buf;
    GuestMemory mem;
    explicit TestRam(uint64_t size) : buf(size, 0) { REQUIRE(mem.add_region(Gpa(0), MmapRegion::borrowed(buf.data(), buf.size()))); }
};

}  // namespace

TEST_CASE("AML: package lengths, names, integers, strings and EISA ids encode as §20 says", "[acpi]") {
    CHECK(aml::pkg_length(0) == aml::Bytes{0x01});
    CHECK(aml::pkg_length(62) == aml::Bytes{0x3f});        // 63 with itself: still one byte
    CHECK(aml::pkg_length(63) == aml::Bytes{0x41, 0x04});  // 65 = 0x41: two bytes
    CHECK(aml::pkg_length(4093) == aml::Bytes{0x4f, 0xff});
    CHECK(aml::pkg_length(4094) == aml::Bytes{0x81, 0x00, 0x01});  // 4097
    CHECK(aml::name_string("_S5") == aml::Bytes{'_', 'S', '5', '_'});
    CHECK(aml::name_string("\\_SB") == aml::Bytes{0x5c, '_', 'S', 'B', '_'});
    CHECK(aml::integer(0) == aml::Bytes{0x00});
    CHECK(aml::integer(1) == aml::Bytes{0x01});
    CHECK(aml::integer(5) == aml::Bytes{0x0a, 0x05});
    CHECK(aml::integer(0x3f8) == aml::Bytes{0x0b, 0xf8, 0x03});
    CHECK(aml::integer(0xd0000000) == aml::Bytes{0x0c, 0x00, 0x00, 0x00, 0xd0});
    CHECK(aml::string("AB") == aml::Bytes{0x0d, 'A', 'B', 0});
    CHECK(aml::eisa_id("PNP0501") == aml::Bytes{0x0c, 0x41, 0xd0, 0x05, 0x01});  // 0x0105d041, as iasl writes it
    CHECK(aml::eisa_id("PNP0B00") == aml::Bytes{0x0c, 0x41, 0xd0, 0x0b, 0x00});
    CHECK(aml::io_port(0x3f8, 8) == aml::Bytes{0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08});
    CHECK(aml::irq_no_flags(4) == aml::Bytes{0x22, 0x10, 0x00});
    CHECK(aml::memory32_fixed(0xd0000000, 0x1000) == aml::Bytes{0x86, 0x09, 0x00, 0x01, 0, 0, 0, 0xd0, 0, 0x10, 0, 0});
    CHECK(aml::interrupt_edge(5) == aml::Bytes{0x89, 0x06, 0x00, 0x03, 0x01, 5, 0, 0, 0});
    CHECK_THROWS(aml::name_string("TOOLONG"));
    CHECK_THROWS(aml::name_string("1AB"));
}

TEST_CASE("the RSDP and XSDT: signatures, both checksums, revision 2, the table addresses", "[acpi]") {
    auto t = build_acpi_tables(config(2, 2));
    REQUIRE(t);
    CHECK(t->base == kAcpiBase);
    std::vector<uint8_t> rsdp(t->bytes.begin(), t->bytes.begin() + kRsdpLength);
    CHECK(chars(rsdp, 0, 8) == "RSD PTR ");
    CHECK(sum(rsdp, 0, 20) == 0);
    CHECK(sum(rsdp, 0, 36) == 0);
    CHECK(chars(rsdp, 9, 6) == "FERRY ");
    CHECK(rsdp[15] == 2);
    CHECK(le(rsdp, 16, 4) == 0);  // no RSDT
    CHECK(le(rsdp, 20, 4) == kRsdpLength);
    CHECK(le(rsdp, 24, 8) == t->xsdt);
    CHECK(t->xsdt % 16 == 0);

    auto xsdt = table_at(*t, t->xsdt);
    check_header(xsdt, "XSDT", 1);
    REQUIRE(xsdt.size() == kSdtHeaderLength + 16);
    CHECK(le(xsdt, 36, 8) == t->fadt);
    CHECK(le(xsdt, 44, 8) == t->madt);
}

TEST_CASE("the FADT is a hardware-reduced 6.0 FADT with ferry's sleep and reset registers", "[acpi]") {
    auto t = build_acpi_tables(config(1, 0));
    REQUIRE(t);
    auto f = table_at(*t, t->fadt);
    check_header(f, "FACP", 6);
    REQUIRE(f.size() == kFadtLength);
    CHECK(f[kFadtMinorVersion] == 0);
    const uint32_t flags = static_cast<uint32_t>(le(f, kFadtFlags, 4));
    CHECK((flags & kFadtHwReduced) != 0);
    CHECK((flags & kFadtResetRegSup) != 0);
    CHECK((flags & kFadtPowerButton) != 0);  // no fixed-feature power button
    CHECK(le(f, 36, 4) == 0);                // FIRMWARE_CTRL: no FACS
    CHECK(le(f, 40, 4) == 0);                // DSDT: the 64-bit X_DSDT is used
    CHECK(le(f, 46, 2) == 0);                // SCI_INT: none (hardware-reduced)
    CHECK(le(f, 48, 4) == 0);                // SMI_CMD
    for (size_t at = 56; at < 88; at += 4) CHECK(le(f, at, 4) == 0);  // PM1a/b, PM2, PM timer, GPE blocks
    CHECK(le(f, 132, 8) == 0);  // X_FIRMWARE_CTRL
    CHECK(le(f, kFadtXDsdt, 8) == t->dsdt);
    for (size_t at = 148; at < kFadtSleepControl; ++at) CHECK(f[at] == 0);  // X_PM1a_EVT .. X_GPE1: none
    CHECK(gas(f, kFadtSleepControl) == Gas{1, 8, 0, 1, kAcpiSleepControlPort});
    CHECK(gas(f, kFadtSleepStatus) == Gas{1, 8, 0, 1, kAcpiSleepStatusPort});
    CHECK(gas(f, kFadtResetReg) == Gas{1, 8, 0, 1, kAcpiResetPort});
    CHECK(f[kFadtResetValue] == kAcpiResetValue);
    const uint16_t arch = static_cast<uint16_t>(le(f, kFadtBootArch, 2));
    CHECK((arch & kBootArchVgaNotPresent) != 0);
    CHECK((arch & 0x20) == 0);  // the CMOS RTC is there
    CHECK(chars(f, kFadtHypervisorId, 8) == "FERRYVMM");
}

TEST_CASE("the MADT describes every vCPU, the IOAPIC and the NMI line", "[acpi]") {
    for (uint32_t cpus : {1u, 2u, 64u, kMpMaxCpus}) {
        auto t = build_acpi_tables(config(cpus, 0));
        REQUIRE(t);
        auto m = table_at(*t, t->madt);
        INFO(cpus << " vCPUs");
        check_header(m, "APIC", 4);
        CHECK(le(m, 36, 4) == 0xfee00000);
        CHECK(le(m, 40, 4) == 0);  // no PCAT_COMPAT
        REQUIRE(m.size() == 44 + 8 * cpus + 12 + 6);
        size_t at = 44;
        for (uint32_t id = 0; id < cpus; ++id, at += 8) {
            CHECK(m[at] == 0);
            CHECK(m[at + 1] == 8);
            CHECK(m[at + 2] == id);  // ACPI processor UID
            CHECK(m[at + 3] == id);  // APIC id
            CHECK(le(m, at + 4, 4) == 1);  // enabled
        }
        CHECK(m[at] == 1);
        CHECK(m[at + 1] == 12);
        CHECK(m[at + 2] == static_cast<uint8_t>(cpus));  // the MP table's IOAPIC id
        CHECK(le(m, at + 4, 4) == 0xfec00000);
        CHECK(le(m, at + 8, 4) == 0);  // GSI base
        at += 12;
        CHECK(m[at] == 4);
        CHECK(m[at + 1] == 6);
        CHECK(m[at + 2] == 0xff);  // every processor
        CHECK(le(m, at + 3, 2) == 0);
        CHECK(m[at + 5] == 1);  // LINT1
    }
}

TEST_CASE("the DSDT holds \\_S5 and ferry's devices, and its AML decodes byte for byte", "[acpi]") {
    for (size_t n : {size_t{0}, size_t{1}, size_t{8}}) {
        INFO(n << " virtio devices");
        auto t = build_acpi_tables(config(2, n));
        REQUIRE(t);
        auto d = table_at(*t, t->dsdt);
        check_header(d, "DSDT", 2);
        AmlWalker w;
        w.terms(d, kSdtHeaderLength, d.size(), "");
        auto s5 = w.names.at("\\_S5_");
        CHECK(s5 == aml::package({aml::integer(5), aml::integer(5), aml::integer(0), aml::integer(0)}));

        std::vector<std::string> want = {"\\_SB_.COM1", "\\_SB_.RTC_"};
        for (size_t i = 0; i < n; ++i) want.push_back("\\_SB_.VR0" + std::to_string(i));
        CHECK(w.devices == want);

        CHECK(w.names.at("\\_SB_.COM1._HID") == aml::eisa_id("PNP0501"));
        auto com = resources(w.names.at("\\_SB_.COM1._CRS"));
        REQUIRE(com.size() == 3);
        CHECK(com[0].first == 0x47);
        CHECK(le(com[0].second, 1, 2) == 0x3f8);
        CHECK(com[0].second[6] == 8);
        CHECK(com[1].first == 0x22);
        CHECK(le(com[1].second, 0, 2) == 1u << 4);
        CHECK(com[2].first == 0x79);

        CHECK(w.names.at("\\_SB_.RTC_._HID") == aml::eisa_id("PNP0B00"));
        auto rtc = resources(w.names.at("\\_SB_.RTC_._CRS"));
        REQUIRE(rtc.size() == 2);  // ports only: ferry's RTC raises no interrupt
        CHECK(le(rtc[0].second, 1, 2) == 0x70);

        for (size_t i = 0; i < n; ++i) {
            std::string dev = "\\_SB_.VR0" + std::to_string(i);
            CHECK(w.names.at(dev + "._HID") == aml::string("LNRO0005"));
            CHECK(w.names.at(dev + "._UID") == aml::integer(i));
            auto r = resources(w.names.at(dev + "._CRS"));
            REQUIRE(r.size() == 3);
            CHECK(r[0].first == 0x86);
            CHECK(le(r[0].second, 1, 4) == 0xd0000000 + i * 0x1000);
            CHECK(le(r[0].second, 5, 4) == 0x1000);
            CHECK(r[1].first == 0x89);
            CHECK(r[1].second[0] == 0x03);  // consumer, edge, active high, exclusive
            CHECK(r[1].second[1] == 1);
            CHECK(le(r[1].second, 2, 4) == 5 + i);
        }
    }
}

TEST_CASE("ACPI tables refuse what they cannot describe", "[acpi]") {
    CHECK_FALSE(build_acpi_tables(config(0, 0)));
    CHECK_FALSE(build_acpi_tables(config(kMpMaxCpus + 1, 0)));
    AcpiConfig high{1, {{0xfffff800, 5}}};
    CHECK_FALSE(build_acpi_tables(high));
    TestRam small(512 << 10);  // RAM ends below 0xe0000
    auto w = write_acpi_tables(small.mem, config(1, 0));
    REQUIRE_FALSE(w);
    CHECK(w.error().message().find("ACPI tables at 0xe0000") != std::string::npos);
}

TEST_CASE("random configurations: every table lies in guest RAM, in [0xe0000, 1 MiB), and checks out", "[acpi]") {
    std::mt19937_64 rng(20261203);
    for (int round = 0; round < 200; ++round) {
        const uint32_t cpus = 1 + static_cast<uint32_t>(rng() % kMpMaxCpus);
        const size_t virtio = rng() % 9;
        const uint64_t ram = (4 + rng() % 60) << 20;
        INFO("round " << round << ": " << cpus << " vCPUs, " << virtio << " devices, " << (ram >> 20) << " MiB");
        TestRam r(ram);
        auto rsdp = write_acpi_tables(r.mem, config(cpus, virtio));
        REQUIRE(rsdp);
        CHECK(*rsdp == kAcpiBase);
        // Follow the pointers the guest follows, through the guest's memory.
        auto in_range = [&](uint64_t gpa, uint64_t len) {
            CHECK(gpa >= kAcpiBase);
            CHECK(gpa + len <= kAcpiEnd);
            CHECK(gpa + len <= ram);
            auto s = r.mem.slice(Gpa(gpa), len);
            REQUIRE(s);
            return std::vector<uint8_t>(s->begin(), s->end());
        };
        auto rs = in_range(*rsdp, kRsdpLength);
        CHECK(sum(rs, 0, kRsdpLength) == 0);
        auto table = [&](uint64_t gpa) {
            auto h = in_range(gpa, kSdtHeaderLength);
            auto t = in_range(gpa, le(h, 4, 4));
            CHECK(sum(t, 0, t.size()) == 0);
            return t;
        };
        auto xsdt = table(le(rs, 24, 8));
        for (size_t at = kSdtHeaderLength; at < xsdt.size(); at += 8) {
            auto t = table(le(xsdt, at, 8));
            if (chars(t, 0, 4) == "FACP") table(le(t, kFadtXDsdt, 8));
        }
    }
}

TEST_CASE("a corrupted byte in any table is caught by its checksum", "[acpi]") {
    auto t = build_acpi_tables(config(4, 3));
    REQUIRE(t);
    std::mt19937_64 rng(7);
    const std::pair<uint64_t, const char*> tables[] = {{t->xsdt, "XSDT"}, {t->fadt, "FACP"}, {t->madt, "APIC"}, {t->dsdt, "DSDT"}};
    for (auto [gpa, sig] : tables) {
        auto good = table_at(*t, gpa);
        for (int i = 0; i < 64; ++i) {
            auto bad = good;
            size_t at = rng() % bad.size();
            bad[at] = static_cast<uint8_t>(bad[at] + 1 + rng() % 255);
            INFO(sig << " byte " << at);
            CHECK(sum(bad, 0, bad.size()) != 0);
        }
    }
    std::vector<uint8_t> rsdp(t->bytes.begin(), t->bytes.begin() + kRsdpLength);
    for (size_t at = 0; at < kRsdpLength; ++at) {
        auto bad = rsdp;
        bad[at] ^= 0x10;
        CHECK((sum(bad, 0, 20) != 0 || sum(bad, 0, kRsdpLength) != 0));
    }
}

TEST_CASE("a PVH guest finds the RSDP in hvm_start_info.rsdp_paddr", "[acpi]") {
    // The zero page's acpi_rsdp_addr (64-bit boot protocol): linux_boot_test.cpp.
    TestRam r(8 << 20);
    auto elf = test::ElfBuilder{}.build();
    REQUIRE(load_pvh(r.mem, elf, std::nullopt, "", kAcpiBase));
    auto si = r.mem.read_obj<HvmStartInfo>(Gpa(kStartInfoGpa));
    REQUIRE(si);
    CHECK(si->rsdp_paddr == kAcpiBase);
    REQUIRE(load_pvh(r.mem, elf, std::nullopt, ""));
    CHECK(r.mem.read_obj<HvmStartInfo>(Gpa(kStartInfoGpa))->rsdp_paddr == 0);
}

TEST_CASE("acpi=off on the command line: Linux ignores the tables, so ferry appends the device words", "[acpi]") {
    CHECK(cmdline_disables_acpi("console=ttyS0 acpi=off"));
    CHECK(cmdline_disables_acpi("acpi=off console=ttyS0"));
    CHECK_FALSE(cmdline_disables_acpi("console=ttyS0"));
    CHECK_FALSE(cmdline_disables_acpi("acpi=off acpi=force"));  // the last one wins
    CHECK_FALSE(cmdline_disables_acpi("xacpi=off"));
    CHECK_FALSE(cmdline_disables_acpi("console=ttyS0 -- acpi=off"));  // init's argument
}

TEST_CASE("the ACPI sleep control register powers off on S5 only; the reset register resets", "[acpi]") {
    std::vector<ShutdownRequest> got;
    AcpiPm pm([&](ShutdownRequest r) { got.push_back(std::move(r)); });
    auto write = [&](uint64_t off, uint8_t v) { pm.write(off, std::span<const uint8_t>(&v, 1)); };
    write(0, 5 << 2);               // S5 without SLP_EN
    write(0, (1 << 2) | 0x20);      // S1
    write(0, (3 << 2) | 0x20);      // S3
    write(1, 0xff);                 // the status register
    write(2, 0x02);                 // not the reset value
    CHECK(got.empty());
    uint8_t v = 0xaa;
    pm.read(1, std::span<uint8_t>(&v, 1));
    CHECK(v == 0);
    write(0, 0x34);  // SLP_TYP 5 | SLP_EN, as Linux's acpi_hw_extended_sleep writes it
    REQUIRE(got.size() == 1);
    CHECK(got[0].kind == ShutdownKind::PowerOff);
    CHECK(got[0].code == 0);
    write(2, kAcpiResetValue);
    REQUIRE(got.size() == 2);
    CHECK(got[1].kind == ShutdownKind::Reset);
}
