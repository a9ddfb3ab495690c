// virtio-blk end to end: the test guest's ring-3 virtio-mmio driver (mode=blk) writes a
// pattern over the disk, reads it back and verifies it, taking the device's interrupts
// (counted: irqs=); the image holds the pattern afterwards; a read-only disk gives the
// guest I/O errors on writes; the guest's benchmark ops (blkop=) report a rate; without a
// disk the guest says so; a bad --disk is one clear line; a guest with a disk migrates
// (same image path on both ends, like shared storage) and keeps verifying on the destination.
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <memory>
#include <regex>

#include "process.hpp"
#include "tests/common/mix64.hpp"

using namespace ferry::test;
using namespace std::chrono_literals;

namespace {

constexpr auto kLong = 120s;

struct Image {
    std::string path;
    explicit Image(const std::string& name, size_t bytes) {
        path = "/tmp/ferry-virtio-" + std::to_string(::getpid()) + "-" + name + ".img";
        std::ofstream f(path, std::ios::binary | std::ios::trunc);
        f.seekp(static_cast<std::streamoff>(bytes) - 1);
        f.put('\0');
    }
    ~Image() { ::unlink(path.c_str()); }
};

// Sectors [0, n) of the image hold the guest's pattern for `seed` (guest/blk.c).
bool image_has_pattern(const std::string& path, uint64_t seed, uint64_t n) {
    std::ifstream f(path, std::ios::binary);
    const uint64_t sm = mix64(seed ^ 0x626c6b);
    for (uint64_t s = 0; s < n; ++s) {
        uint64_t words[64];
        if (!f.read(reinterpret_cast<char*>(words), sizeof(words))) return false;
        for (uint64_t w = 0; w < 64; ++w)
            if (words[w] != mix64(sm ^ (s << 6 | w))) return false;
    }
    return true;
}

struct BlkLine {
    uint64_t ok = 0, bad = 0, ioerr = 0, irqs = 0;
};
std::optional<BlkLine> parse_blk(const std::optional<std::string>& line) {
    std::smatch m;
    static const std::regex re("^guest: blk ok=(\\d+) bad=(\\d+) ioerr=(\\d+) irqs=(\\d+)");
    if (!line || !std::regex_search(*line, m, re)) return std::nullopt;
    return BlkLine{std::stoull(m[1]), std::stoull(m[2]), std::stoull(m[3]), std::stoull(m[4])};
}


}  // namespace

TEST_CASE("virtio-blk: the guest writes, reads back and verifies its disk", "[kvm][virtio]") {
    // The guest finds the device in the ACPI DSDT (the default), or with --no-acpi in the
    // virtio_mmio.device= word ferry appends; either way at 0xd0000000, IRQ 5.
    const bool acpi = GENERATE(true, false);
    INFO((acpi ? "ACPI" : "--no-acpi"));
    Image img("rw", 1 << 20);
    std::vector<std::string> argv{ferry_bin(), "run", "--kernel", testguest_elf(), "--mem", "64M", "--disk", img.path, "--cmdline",
                                  "mode=blk wss=256K seed=7 ticks=3"};
    if (!acpi) argv.push_back("--no-acpi");
    Process p(argv);
    auto rc = p.wait_exit(kLong);
    INFO(p.out_text() << p.err());
    REQUIRE(rc == 0);
    CHECK(p.out_text().find("guest: ready") != std::string::npos);
    CHECK(p.out_text().find("guest: blk sectors=512 capacity=2048 base=0xd0000000 irq=5") != std::string::npos);
    std::optional<BlkLine> last;
    for (const auto& l : p.out_lines())
        if (auto b = parse_blk(l)) last = b;
    REQUIRE(last);
    CHECK(last->ok > 0);
    CHECK(last->bad == 0);
    CHECK(last->ioerr == 0);
    CHECK(last->irqs > 0);  // IOAPIC pin 5 routed to the BSP, which runs with IF=1
    // A full pass went over the 512 sectors (64 chunks) only if ok >= 64; check what was written.
    if (last->ok >= 64) CHECK(image_has_pattern(img.path, 7, 512));
    else CHECK(image_has_pattern(img.path, 7, 8));
}

TEST_CASE("virtio-blk: a read-only disk gives the guest I/O errors on writes", "[kvm][virtio]") {
    Image img("ro", 1 << 20);
    Process p({ferry_bin(), "run", "--kernel", testguest_elf(), "--mem", "64M", "--disk", img.path + ",readonly", "--cmdline",
               "mode=blk wss=64K ticks=2"});
    auto rc = p.wait_exit(kLong);
    INFO(p.out_text() << p.err());
    REQUIRE(rc == 0);
    std::optional<BlkLine> last;
    for (const auto& l : p.out_lines())
        if (auto b = parse_blk(l)) last = b;
    REQUIRE(last);
    CHECK(last->ioerr > 0);
    CHECK(last->ok == 0);
    CHECK(last->bad == 0);
    CHECK(image_has_pattern(img.path, 1, 1) == false);  // nothing was written
}

TEST_CASE("virtio-blk: the guest's benchmark ops report a rate; irq=off takes no interrupt", "[kvm][virtio]") {
    Image img("bench", 1 << 20);
    for (std::string op : {"randread", "write"}) {
        DYNAMIC_SECTION(op) {
            Process p({ferry_bin(), "run", "--kernel", testguest_elf(), "--mem", "64M", "--disk", img.path, "--cmdline",
                       "mode=blk wss=1M blkop=" + op + " bs=8K qd=4 irq=off ticks=2"});
            auto rc = p.wait_exit(kLong);
            INFO(p.out_text() << p.err());
            REQUIRE(rc == 0);
            std::smatch m;
            std::string out = p.out_text();
            REQUIRE(std::regex_search(out, m, std::regex("guest: blkbench op=" + op + " bs=8192 qd=4 iops=(\\d+) mibps=[0-9]+\\.[0-9]{2}\n")));
            CHECK(std::stoull(m[1]) > 0);
            std::optional<BlkLine> last;
            for (const auto& l : p.out_lines())
                if (auto b = parse_blk(l)) last = b;
            REQUIRE(last);
            CHECK(last->ok > 0);
            CHECK(last->ioerr == 0);
            CHECK(last->irqs == 0);
        }
    }
}

TEST_CASE("virtio-blk: mode=blk without a disk is one clear guest error", "[kvm][virtio]") {
    Process p({ferry_bin(), "run", "--kernel", testguest_elf(), "--mem", "64M", "--cmdline", "mode=blk"});
    auto rc = p.wait_exit(kLong);
    INFO(p.out_text() << p.err());
    CHECK(rc == 16 + 2);  // the guest's own error code 2
    CHECK(p.out_text().find("guest: error blk no virtio-mmio device (none on the command line, none in the ACPI DSDT)") !=
          std::string::npos);
}

TEST_CASE("virtio-blk: a bad --disk is one clear error line", "[kvm][virtio]") {
    for (std::string disk : {"/nonexistent/ferry.img", "/tmp,readonly", "/tmp/x.img,bogus"}) {
        DYNAMIC_SECTION(disk) {
            Process p({ferry_bin(), "run", "--kernel", testguest_elf(), "--disk", disk});
            auto rc = p.wait_exit(30s);
            INFO(p.err());
            REQUIRE(rc);
            CHECK(*rc != 0);
            CHECK(*rc < 128);  // no signal, no core
            std::string err = p.err();
            CHECK(std::count(err.begin(), err.end(), '\n') == 1);
            CHECK(err.find("--disk") != std::string::npos);
        }
    }
}

TEST_CASE("virtio-blk: an image truncated under the guest gives it I/O errors and ferry a warning", "[kvm][virtio]") {
    Image img("shrink", 1 << 20);
    Process p({ferry_bin(), "run", "--kernel", testguest_elf(), "--mem", "64M", "--disk", img.path, "--cmdline",
               "mode=blk blkop=read bs=4096 qd=2"});
    auto first = parse_blk(p.wait_line(std::regex("^guest: blk ok=[1-9]"), kLong));
    REQUIRE(first);
    CHECK(first->ioerr == 0);
    // Reads past the new end return 0 bytes, one straddling it a short count: each is
    // an I/O error for the guest (after ferry asked for the rest), never a crash.
    REQUIRE(::truncate(img.path.c_str(), 6 * 1024) == 0);
    auto later = parse_blk(p.wait_line(std::regex("^guest: blk ok=\\d+ bad=0 ioerr=[1-9]"), 30s));
    INFO(p.out_text() << p.err());
    REQUIRE(later);
    CHECK(p.err().find("the image ends there; the guest gets an I/O error") != std::string::npos);
    p.signal(SIGTERM);
    CHECK(p.wait_exit(30s) == 0);
}

TEST_CASE("virtio-blk: a guest with a disk migrates and keeps verifying (precopy, postcopy)", "[kvm][virtio][migration][postcopy]") {
  for (std::string mode : {"precopy", "postcopy"}) {
   DYNAMIC_SECTION("mode=" << mode) {
    Image img("mig-" + mode, 1 << 20);
    auto q = sock("src-" + mode);
    auto src = std::make_unique<Process>(std::vector<std::string>{
        ferry_bin(), "run", "--kernel", testguest_elf(), "--mem", "64M", "--qmp", q, "--disk", img.path, "--cmdline",
        "mode=blk wss=512K seed=3"});
    REQUIRE(src->wait_line(std::regex("^guest: blk ok=[1-9]"), kLong));
    Process dst({ferry_bin(), "run", "--mem", "64M", "--disk", img.path, "--incoming", "tcp:127.0.0.1:0"});
    auto port = incoming_port(dst);
    INFO(dst.err());
    REQUIRE(port);
    Process mig({ferry_bin(), "migrate", "--qmp", q, "--to", "tcp:127.0.0.1:" + *port, "--mode", mode});
    auto mig_rc = mig.wait_exit(kLong);
    INFO("migrate: " << mig.out_text() << mig.err() << "\nsource: " << src->err() << "\ndest: " << dst.err());
    REQUIRE(mig_rc == 0);
    REQUIRE(src->wait_exit(30s) == 0);
    std::optional<BlkLine> before;
    for (const auto& l : src->out_lines())
        if (auto b = parse_blk(l)) before = b;
    INFO("source guest: " << src->out_text());
    REQUIRE(before);
    CHECK(before->bad == 0);
    CHECK(before->ioerr == 0);
    // Two more reports on the destination: still counting, nothing bad.
    auto first = parse_blk(dst.wait_line(std::regex("^guest: blk ok="), 30s));
    REQUIRE(first);
    auto second = parse_blk(dst.wait_line(std::regex("^guest: blk ok=" + std::string("(?!") + std::to_string(first->ok) + " )"), 30s));
    INFO("destination guest: " << dst.out_text() << "\ndestination: " << dst.err());
    REQUIRE(second);
    CHECK(second->ok > before->ok);
    CHECK(second->bad == 0);
    CHECK(second->ioerr == 0);
    dst.signal(SIGTERM);
    CHECK(dst.wait_exit(30s) == 0);
   }
  }
}

TEST_CASE("virtio-blk: a destination without the disk refuses the guest; the source goes on", "[kvm][virtio][migration]") {
    Image img("mig-nodisk", 1 << 20);
    auto q = sock("src-nodisk");
    Process src({ferry_bin(), "run", "--kernel", testguest_elf(), "--mem", "64M", "--qmp", q, "--disk", img.path, "--cmdline",
                 "mode=blk wss=256K seed=5"});
    REQUIRE(src.wait_line(std::regex("^guest: blk ok=[1-9]"), kLong));
    Process dst({ferry_bin(), "run", "--mem", "64M", "--incoming", "tcp:127.0.0.1:0"});
    auto port = incoming_port(dst);
    REQUIRE(port);
    Process mig({ferry_bin(), "migrate", "--qmp", q, "--to", "tcp:127.0.0.1:" + *port});
    auto mig_rc = mig.wait_exit(kLong);
    INFO("migrate: " << mig.out_text() << mig.err() << "\nsource: " << src.err() << "\ndest: " << dst.err());
    REQUIRE(mig_rc);
    CHECK(*mig_rc != 0);
    dst.wait_exit(30s);
    CHECK(dst.err().find("the source has a virtio-blk 'blk0' that this machine lacks") != std::string::npos);
    // The source resumed: its guest keeps verifying.
    size_t seen = src.out_lines().size();
    auto next = src.wait_line(std::regex("^guest: blk ok="), 30s);
    REQUIRE(next);
    auto again = parse_blk(src.wait_line(std::regex("^guest: blk ok="), 30s));
    REQUIRE(again);
    CHECK(again->bad == 0);
    CHECK(src.out_lines().size() > seen);
    src.signal(SIGTERM);
    CHECK(src.wait_exit(30s) == 0);
}
