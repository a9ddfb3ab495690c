// Boots the minimal Linux kernel that scripts/build-linux caches, as a bzImage (Linux
// 64-bit boot protocol) and as a vmlinux (PVH), both with ferry's ACPI tables, and as
// that vmlinux with its PVH note hidden (64-bit boot protocol, entered at startup_64)
// with --no-acpi (the MP table), and checks its serial console.
//
// Without VMX/SVM (kvm_pvm: KVM emulates ring-0 code, DESIGN.md §6) the kernel stops
// at its int3 self-test, so the test checks what it prints before that: the banner,
// the e820 map ferry gave it, the command line, the initrd placement and the ACPI
// tables or the MP table it parsed, with the CPUs and the IOAPIC. scripts/test runs
// these cases in the nested test VM on such a host. With hardware virtualization (a
// VMX/SVM host, or the nested test VM of docs/testing.md) Linux must reach the
// initramfs' /init (tests/linux/init.c), where Linux's own drivers are ferry's clients:
// the bzImage gets a disk and a network card (found in the DSDT), and init writes and
// reads back a pattern on /dev/vda (found afterwards in the image file) and pings the
// host side of the tap; init then powers off, through ACPI's S5 (ferry exits 0 with a
// QMP SHUTDOWN event, guest-shutdown), or without ACPI through ferry's exit port. A
// second test migrates a Linux guest whose init runs a memory-checking loop, then has
// it power off on the destination. Skipped, with a WARN, when the kernel is not built
// (scripts/build-linux; .ci/run builds it first).
#include <arpa/inet.h>
#include <elf.h>
#include <signal.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <regex>
#include <thread>

#include "process.hpp"
#include "tests/common/mix64.hpp"

using namespace ferry::test;
using namespace std::chrono_literals;

namespace {

// Deadlines, not speed checks. On kvm_pvm the bzImage's lines take ~35 s (its
// decompressor runs in emulated ring 0); a loaded CI host may take twice that. In the
// nested test VM (TCG emulates everything) Linux takes about 2 minutes to reach /init.
constexpr auto kLinuxBoot = 150s;
const std::chrono::seconds kLinuxInit = std::getenv("FERRY_NESTED") ? 600s : 150s;

// init.c's disk pattern: 64 KiB at byte 1 MiB, 64-bit words mix64(seed * 0x10000 + i).
constexpr uint64_t kSeed = 7;
constexpr size_t kPatternOff = 1 << 20, kPatternLen = 64 << 10;
constexpr uint16_t kPingType = 0x88b6;

// A tap device for one test, up, with a packet socket on its host side that answers
// init's "ferry-linux ping SEED SEQ" frames with "ferry-linux pong SEED SEQ".
class PingTap {
public:
    PingTap() {
        name = "fyl" + std::to_string(::getpid() % 100000);
        if (!add_tap(name)) {
            name.clear();
            return;
        }
        sock_ = tap_packet_socket(name, kPingType, ifindex_);
    }
    ~PingTap() {
        if (sock_ >= 0) ::close(sock_);
        if (!name.empty()) del_tap(name);
    }
    bool ok() const { return ifindex_ > 0; }
    // Answers every ping waiting on the socket.
    void serve() {
        uint8_t in[1600];
        for (;;) {
            pollfd p{sock_, POLLIN, 0};
            if (::poll(&p, 1, 0) <= 0) return;
            ssize_t n = ::recv(sock_, in, sizeof(in), 0);
            if (n < 14) return;
            std::string text(reinterpret_cast<char*>(in) + 14, static_cast<size_t>(n) - 14);
            text = text.substr(0, text.find('\0'));
            const std::string ping = "ferry-linux ping ";
            if (text.rfind(ping, 0) != 0) continue;
            ++pings;
            uint8_t out[64] = {};
            std::memcpy(out, in + 6, 6);  // to the guest
            std::memset(out + 6, 0x02, 6);
            out[12] = kPingType >> 8;
            out[13] = kPingType & 0xff;
            std::string pong = "ferry-linux pong " + text.substr(ping.size());
            std::memcpy(out + 14, pong.data(), std::min(pong.size(), sizeof(out) - 15));
            sockaddr_ll a{};
            a.sll_family = AF_PACKET;
            a.sll_ifindex = ifindex_;
            a.sll_halen = 6;
            std::memcpy(a.sll_addr, out, 6);
            [[maybe_unused]] auto sent = ::sendto(sock_, out, sizeof(out), 0, reinterpret_cast<sockaddr*>(&a), sizeof(a));
        }
    }
    std::string name;
    int pings = 0;

private:
    int sock_ = -1, ifindex_ = 0;
};

// The cache directory of the built kernel, if scripts/build-linux has built it.
std::optional<std::string> built_linux() {
    Process p({std::string(SOURCE_ROOT) + "/scripts/build-linux", "--check"});
    auto rc = p.wait_exit(60s);
    if (rc != 0 || p.out_lines().empty()) return std::nullopt;
    return p.out_lines().back();
}

bool hardware_virtualization() {
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("flags", 0) == 0) return std::regex_search(line, std::regex(R"(\b(vmx|svm)\b)"));
    return false;
}

// A copy of `vmlinux` with its PT_NOTE program headers turned into PT_NULL, so ferry
// cannot see the PVH note and boots it through the Linux 64-bit entry instead.
std::optional<std::string> vmlinux_without_pvh_note(const std::string& vmlinux) {
    std::ifstream in(vmlinux, std::ios::binary);
    std::vector<char> f((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    Elf64_Ehdr eh;
    if (f.size() < sizeof(eh)) return std::nullopt;
    std::memcpy(&eh, f.data(), sizeof(eh));
    if (eh.e_phoff > f.size() || uint64_t{eh.e_phnum} * sizeof(Elf64_Phdr) > f.size() - eh.e_phoff) return std::nullopt;
    for (unsigned i = 0; i < eh.e_phnum; ++i) {
        Elf64_Phdr ph;
        char* at = f.data() + eh.e_phoff + i * sizeof(Elf64_Phdr);
        std::memcpy(&ph, at, sizeof(ph));
        if (ph.p_type == PT_NOTE) ph.p_type = PT_NULL;
        std::memcpy(at, &ph, sizeof(ph));
    }
    std::string path = "/tmp/ferry-vmlinux-nonote-" + std::to_string(::getpid());
    std::ofstream(path, std::ios::binary).write(f.data(), static_cast<std::streamsize>(f.size()));
    return path;
}

// Waits until each pattern matches some console line, in any order, or ferry exits;
// returns the patterns that never matched.
std::vector<std::string> wait_all(Process& p, const std::vector<std::string>& patterns, std::chrono::seconds timeout,
                                  const std::function<void()>& meanwhile = {}) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    bool exited = false;
    for (;;) {
        if (meanwhile) meanwhile();
        std::vector<std::string> missing;
        for (const auto& pat : patterns) {
            std::regex re(pat);
            bool found = false;
            for (const auto& line : p.out_lines()) found = found || std::regex_search(line, re);
            if (!found) missing.push_back(pat);
        }
        if (missing.empty() || std::chrono::steady_clock::now() > deadline || exited) return missing;
        exited = p.wait_exit(0ms).has_value();  // one more look at its last output, then give up
        p.drain(200ms);
        std::this_thread::sleep_for(50ms);
    }
}

// Waits, in the background, for the QMP SHUTDOWN event a guest power-off sends
// (tests/integration/qmp_client.py): connected before the guest gets there.
class ShutdownWatch {
public:
    ShutdownWatch(const std::string& sock, std::chrono::seconds within)
        : py_({"/usr/bin/python3", std::string(SOURCE_ROOT) + "/tests/integration/qmp_client.py", sock, "shutdown",
               "guest-shutdown", "true", std::to_string(within.count())}) {}
    bool connected() { return py_.wait_line(std::regex("^ready$"), 60s).has_value(); }
    // 0 when SHUTDOWN {"guest": true, "reason": "guest-shutdown"} came.
    std::optional<int> result() { return py_.wait_exit(60s); }
    std::string err() { return py_.err(); }

private:
    Process py_;
};

// One Linux boot (see the file comment): `image` is bzImage, vmlinux (PVH) or
// vmlinux-64 (the vmlinux entered at startup_64); `acpi` false runs it with --no-acpi.
void boot_linux(const std::string& image, bool acpi) {
    auto dir = built_linux();
    if (!dir) {
        WARN("the Linux guest is not built: skipping the Linux boot test (run scripts/build-linux, ~4 minutes once)");
        return;
    }
    const bool hw = hardware_virtualization();
    // Where Linux reaches /init, the bzImage boots with 2 vCPUs, a disk and a network
    // card; the vmlinux forms with 1 vCPU and no devices (in the nested test VM every
    // boot costs minutes). Without VMX/SVM all three show 2 vCPUs.
    const bool devices = hw && image == "bzImage";
    const int cpus = hw && !devices ? 1 : 2;
    std::string kernel = *dir + "/" + image;
    if (image == "vmlinux-64") {
        auto copy = vmlinux_without_pvh_note(*dir + "/vmlinux");
        REQUIRE(copy);
        kernel = *copy;
    }
    const std::string marker = "ferry.test=" + image;
    // noxsave, clearcpuid: instructions kvm_pvm's emulator refuses (DESIGN.md §6).
    // acpi_force_table_verification: Linux checks every table's checksum at boot.
    const std::string cmdline = "console=ttyS0 noxsave clearcpuid=popcnt,smap acpi_force_table_verification ferry.seed=" +
                                std::to_string(kSeed) + " " + marker;
    const std::string sock = "/tmp/ferry-linux-" + std::to_string(::getpid()) + ".sock";
    std::vector<std::string> argv{ferry_bin(), "run", "--kernel", kernel, "--initrd", *dir + "/initramfs.cpio.lz4",
                                  "--mem", "256M", "--cpus", std::to_string(cpus), "--cmdline", cmdline, "--qmp", sock};
    if (!acpi) argv.push_back("--no-acpi");
    const std::string disk = "/tmp/ferry-linux-disk-" + std::to_string(::getpid()) + ".img";
    std::unique_ptr<PingTap> tap;
    if (devices) {
        std::ofstream(disk, std::ios::binary | std::ios::trunc).close();
        REQUIRE(::truncate(disk.c_str(), 16 << 20) == 0);
        argv.insert(argv.end(), {"--disk", disk});
        tap = std::make_unique<PingTap>();
        if (tap->ok())
            argv.insert(argv.end(), {"--net", "tap:" + tap->name});
        else
            WARN("cannot create a tap device (CAP_NET_ADMIN?): Linux's virtio-net is not checked");
    }
    Process p(argv);
    std::unique_ptr<ShutdownWatch> watch;
    if (hw && acpi) {
        watch = std::make_unique<ShutdownWatch>(sock, kLinuxInit + 60s);
        REQUIRE(watch->connected());
    }
    // With ACPI the devices are in the DSDT and ferry appends nothing to the command
    // line; without it, the virtio_mmio.device= words.
    std::vector<std::string> expect = {
        R"(Linux version 6\.1\.)",
        "Command line: " + std::regex_replace(cmdline, std::regex(R"(\.)"), R"(\$&)") + (devices && !acpi ? "" : "\r?$"),
        // The e820 map ferry gave it (vmm/boot/pvh.cpp build_e820, 256 MiB).
        R"(BIOS-e820: \[mem 0x0000000000000000-0x000000000009fbff\] usable)",
        R"(BIOS-e820: \[mem 0x000000000009fc00-0x00000000000fffff\] reserved)",
        R"(BIOS-e820: \[mem 0x0000000000100000-0x000000000fffffff\] usable)",
        R"(RAMDISK: \[mem 0x0)",
        R"(IOAPIC\[0\]: apic_id )" + std::to_string(cpus) + R"(, version 17, address 0xfec00000, GSI 0-23)",
        "smpboot: Allowing " + std::to_string(cpus) + " CPUs, 0 hotplug CPUs",
    };
    if (acpi) {
        // ferry's ACPI tables (vmm/boot/acpi.hpp), found through the zero page or
        // hvm_start_info, and the MADT used for the CPUs.
        for (const std::string& t : std::vector<std::string>{R"(RSDP 0x00000000000E0000 000024 \(v02 FERRY \))", R"(XSDT 0x00000000000E0030 000034 \(v01 FERRY  FERRYVM )",
                       R"(FACP 0x[0-9A-F]+ 000114 \(v06 FERRY  FERRYVM )", R"(APIC 0x[0-9A-F]+ [0-9A-F]+ \(v04 FERRY  FERRYVM )",
                       R"(DSDT 0x[0-9A-F]+ [0-9A-F]+ \(v02 FERRY  FERRYVM )", R"(LAPIC_NMI \(acpi_id\[0xff\] dfl dfl lint\[0x1\]\))",
                       R"(Using ACPI \(MADT\) for SMP configuration information)"})
            expect.push_back("ACPI: " + t);
    } else {
        // ferry's MP table (vmm/boot/mptable.cpp).
        for (const std::string& t : std::vector<std::string>{R"(found SMP MP-table at \[mem 0x0009fc00-0x0009fc0f\])", R"(Intel MultiProcessor Specification v1\.4)",
                       R"(MPTABLE: OEM ID: FERRY)", R"(Processor #0 \(Bootup-CPU\))", "Processors: " + std::to_string(cpus)})
            expect.push_back(t);
        if (cpus > 1) expect.push_back(R"(Processor #1\b)");
    }
    auto serve = [&] {
        if (tap && tap->ok()) tap->serve();
    };
    auto missing = wait_all(p, expect, kLinuxBoot, serve);
    std::string missing_text;
    for (const auto& m : missing) missing_text += "  " + m + "\n";
    INFO("missing:\n" << missing_text);
    CHECK(missing.empty());
    if (hw) {
        // Hardware virtualization: Linux reaches the initramfs' /init, its drivers use
        // ferry's devices, and init powers off with status 0: through ACPI's S5, or
        // through ferry's exit port without ACPI.
        std::vector<std::string> init_lines = {"^ferry-init: hello", "^ferry-init: cpus=" + std::to_string(cpus) + "\r?$",
                                               "^smp: Brought up 1 node, " + std::to_string(cpus) + " CPU",
                                               std::string("^ferry-init: powering off status=0 via=") + (acpi ? "acpi" : "port")};
        if (acpi) {
            init_lines.push_back(R"(ACPI: Interpreter enabled)");
            init_lines.push_back(R"(ACPI: (PM: )?\(supports S0 S5\))");
            init_lines.push_back(R"(reboot: Power down)");
        }
        if (devices) {
            init_lines.push_back("^ferry-init: vda read=512 head=0000000000000000");
            init_lines.push_back("^ferry-init: vda write=65536 readback=ok irqs=[1-9]");
            if (tap->ok()) init_lines.push_back("^ferry-init: eth0 mac=52:54:00:12:34:56 pong=ok tries=[0-9]+ irqs=[1-9]");
        } else {
            init_lines.push_back("^ferry-init: vda absent");
            init_lines.push_back("^ferry-init: eth0 absent");
        }
        auto missing_init = wait_all(p, init_lines, kLinuxInit, serve);
        std::string text;
        for (const auto& m : missing_init) text += "  " + m + "\n";
        INFO("console:\n" << p.out_text() << "\nstderr:\n" << p.err() << "\nmissing from /init:\n" << text);
        CHECK(missing_init.empty());
        CHECK(p.wait_exit(60s) == 0);  // S5 (status 0), or /init wrote 0 to the exit port
        if (watch) {
            INFO("QMP client: " << watch->err());
            CHECK(watch->result() == 0);  // SHUTDOWN {"guest": true, "reason": "guest-shutdown"}
        }
        if (devices) {
            // The pattern init wrote reached the image file.
            std::ifstream img(disk, std::ios::binary);
            std::vector<uint64_t> got(kPatternLen / 8);
            img.seekg(kPatternOff);
            img.read(reinterpret_cast<char*>(got.data()), kPatternLen);
            size_t bad = 0;
            for (size_t i = 0; i < got.size(); ++i) bad += got[i] != mix64(kSeed * 0x10000 + i);
            CHECK(bad == 0);
            if (tap->ok()) CHECK(tap->pings >= 1);
        }
    } else {
        INFO("console:\n" << p.out_text() << "\nstderr:\n" << p.err());
        CHECK(missing.empty());
        WARN("no VMX/SVM here: Linux stops at its int3 self-test under this KVM; checked the boot lines only (scripts/test "
             "runs the [linux] cases in the nested test VM on such a host)");
    }
    // No table Linux found fault with: a bad checksum, or an error from ACPICA. (With
    // --no-acpi, ACPICA says that it found no RSDP, which is the point.)
    std::regex complaint(R"((Incorrect checksum|ACPI BIOS (Warning|Error)|ACPI Error|ACPI Warning))");
    for (const auto& line : p.out_lines()) {
        INFO(line);
        if (acpi) CHECK_FALSE(std::regex_search(line, complaint));
    }
    if (image == "vmlinux-64") ::unlink(kernel.c_str());
    if (devices) ::unlink(disk.c_str());
    ::unlink(sock.c_str());
}

// The built kernel's directory, where Linux can reach /init here; otherwise a WARN
// that says why `what` cannot be checked, and nothing.
std::optional<std::string> linux_reaching_init(const std::string& what) {
    auto dir = built_linux();
    if (!dir) {
        WARN("the Linux guest is not built: skipping (run scripts/build-linux)");
        return std::nullopt;
    }
    if (!hardware_virtualization()) {
        WARN("no VMX/SVM here: Linux does not reach /init under this KVM, so it cannot " << what
             << " (scripts/test runs the [linux] cases in the nested test VM on such a host)");
        return std::nullopt;
    }
    return dir;
}

}  // namespace

TEST_CASE("Linux boots as a bzImage with ACPI (2 vCPUs, a disk, a network card) and powers off", "[kvm][linux]") {
    boot_linux("bzImage", true);
}

TEST_CASE("Linux boots as a vmlinux through PVH with ACPI and powers off", "[kvm][linux]") { boot_linux("vmlinux", true); }

TEST_CASE("Linux boots as a vmlinux through the 64-bit entry with --no-acpi (MP table, exit port)", "[kvm][linux]") {
    boot_linux("vmlinux-64", false);
}

TEST_CASE("Linux reboots through the ACPI reset register", "[kvm][linux]") {
    auto dir = linux_reaching_init("reboot");
    if (!dir) return;
    // init runs reboot(RB_AUTOBOOT); Linux's default reboot method is the FADT's reset
    // register (then the i8042), and --no-reboot makes the reset end ferry.
    Process p({ferry_bin(), "run", "--kernel", *dir + "/vmlinux", "--initrd", *dir + "/initramfs.cpio.lz4", "--mem", "256M",
               "--cpus", "1", "--no-reboot", "--cmdline", "console=ttyS0 ferry.reboot=1"});
    auto missing = wait_all(p, {"^ferry-init: rebooting", "reboot: Restarting system"}, kLinuxInit);
    auto rc = p.wait_exit(60s);
    INFO("console:\n" << p.out_text() << "\nstderr:\n" << p.err());
    CHECK(missing.empty());
    CHECK(rc == 0);
    CHECK(p.err().find("guest reset through the ACPI reset register; exiting (--no-reboot)") != std::string::npos);
}

TEST_CASE("a Linux guest migrates while its init checks memory, then powers off on the destination", "[kvm][linux][migration]") {
    auto dir = linux_reaching_init("run its memory check");
    if (!dir) return;
    const std::string qmp = "/tmp/ferry-linux-mig-" + std::to_string(::getpid()) + ".sock";
    const std::string dst_qmp = "/tmp/ferry-linux-mig-dst-" + std::to_string(::getpid()) + ".sock";
    // The disk both sides open (shared storage): the test stops init's loop through it.
    const std::string disk = "/tmp/ferry-linux-mig-disk-" + std::to_string(::getpid()) + ".img";
    std::ofstream(disk, std::ios::binary | std::ios::trunc).close();
    REQUIRE(::truncate(disk.c_str(), 16 << 20) == 0);
    Process src({ferry_bin(), "run", "--kernel", *dir + "/bzImage", "--initrd", *dir + "/initramfs.cpio.lz4", "--mem", "256M",
                 "--cpus", "1", "--qmp", qmp, "--disk", disk, "--cmdline", "console=ttyS0 ferry.memtest=16"});
    // The loop's own line, twice: the pattern is written and checked once.
    auto first = src.wait_line(std::regex(R"(^ferry-init: mem pass=([2-9]|[0-9]{2,}) )"), kLinuxInit);
    INFO("source console:\n" << src.out_text() << "\nsource stderr:\n" << src.err());
    REQUIRE(first);
    Process dst({ferry_bin(), "run", "--mem", "256M", "--cpus", "1", "--disk", disk, "--qmp", dst_qmp, "--incoming",
                 "tcp:127.0.0.1:0"});
    auto port = incoming_port(dst);
    INFO("destination stderr:\n" << dst.err());
    REQUIRE(port);
    // A generous downtime limit: this checks that no page is lost, not how fast the
    // switch-over is, and in the nested test VM the stream runs at emulated speed (with
    // 32 MiB rewritten a second and 300 ms it did not converge there once).
    Process mig({ferry_bin(), "migrate", "--qmp", qmp, "--to", "tcp:127.0.0.1:" + *port, "--downtime-limit", "5000"});
    auto mig_rc = mig.wait_exit(300s);
    INFO("migrate:\n" << mig.out_text() << mig.err());
    REQUIRE(mig_rc == 0);
    CHECK(src.wait_exit(60s) == 0);

    // Each "mem pass=N bad=B" line; the destination's continue the source's count.
    auto passes = [](const Process& p) {
        std::vector<std::pair<long, long>> out;
        std::regex re(R"(^ferry-init: mem pass=(\d+) bad=(\d+))");
        for (const auto& l : p.out_lines()) {
            std::smatch m;
            if (std::regex_search(l, m, re)) out.emplace_back(std::stol(m[1]), std::stol(m[2]));
        }
        return out;
    };
    src.drain();
    auto before = passes(src);
    REQUIRE(!before.empty());
    auto deadline = std::chrono::steady_clock::now() + 180s;
    while (passes(dst).size() < 3 && std::chrono::steady_clock::now() < deadline) dst.drain(500ms);
    auto after = passes(dst);
    INFO("destination console:\n" << dst.out_text());
    REQUIRE(after.size() >= 3);
    CHECK(after.front().first > before.back().first);
    for (const auto& [pass, bad] : before) CHECK(bad == 0);
    for (const auto& [pass, bad] : after) CHECK(bad == 0);

    // The migrated guest powers off through ACPI on the destination: the test writes
    // "ferry-stop" into the disk image, init's loop ends and init runs poweroff.
    ShutdownWatch watch(dst_qmp, 300s);
    REQUIRE(watch.connected());
    {
        std::fstream img(disk, std::ios::binary | std::ios::in | std::ios::out);
        img.seekp(2 << 20);
        img.write("ferry-stop", 10);
    }
    auto off = dst.wait_line(std::regex(R"(^ferry-init: powering off status=(\d+) via=(\w+))"), 180s);
    INFO("destination console:\n" << dst.out_text() << "\ndestination stderr:\n" << dst.err());
    REQUIRE(off);
    CHECK(off->find("status=0 via=acpi") != std::string::npos);
    CHECK(dst.wait_exit(60s) == 0);
    INFO("QMP client: " << watch.err());
    CHECK(watch.result() == 0);  // SHUTDOWN {"guest": true, "reason": "guest-shutdown"}
    ::unlink(qmp.c_str());
    ::unlink(disk.c_str());
}
