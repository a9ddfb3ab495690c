// Boots the minimal Linux kernel that scripts/build-linux caches, as a bzImage (Linux
// 64-bit boot protocol), as a vmlinux (PVH) and as that vmlinux with its PVH note
// hidden (64-bit boot protocol, entered at startup_64), and checks its serial console.
//
// Without VMX/SVM (this project's CI host: KVM emulates ring-0 code, DESIGN.md §6) the
// kernel stops at its int3 self-test, so the test checks what it prints before that:
// the banner, the e820 map ferry gave it, the command line, the initrd placement and
// the MP-table / CPU lines. With hardware virtualization it must reach the
// initramfs' /init and see both vCPUs. Skipped, with a WARN, when the kernel is not
// built (scripts/build-linux; .ci/run builds it first).
#include <elf.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>
#include <iterator>
#include <regex>
#include <thread>

#include "process.hpp"

using namespace ferry::test;
using namespace std::chrono_literals;

namespace {

// A deadline, not a speed check: the bzImage's lines take ~35 s here (its decompressor
// runs in emulated ring 0); a loaded CI host may take twice that.
constexpr auto kLinuxBoot = 150s;

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

// Waits until each pattern matches some console line, in any order; returns the
// patterns that never did.
std::vector<std::string> wait_all(Process& p, const std::vector<std::string>& patterns, std::chrono::seconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        std::vector<std::string> missing;
        for (const auto& pat : patterns) {
            std::regex re(pat);
            bool found = false;
            for (const auto& line : p.out_lines()) found = found || std::regex_search(line, re);
            if (!found) missing.push_back(pat);
        }
        if (missing.empty() || std::chrono::steady_clock::now() > deadline) return missing;
        p.drain(200ms);
        std::this_thread::sleep_for(50ms);
    }
}

}  // namespace

TEST_CASE("Linux boots as a bzImage and as a vmlinux (PVH)", "[kvm][linux]") {
    auto dir = built_linux();
    if (!dir) {
        WARN("the Linux guest is not built: skipping the Linux boot test (run scripts/build-linux, ~4 minutes once)");
        return;
    }
    const bool hw = hardware_virtualization();
    const int cpus = 2;
    // bzImage and vmlinux-64: the 64-bit boot protocol; vmlinux: its PVH note.
    for (std::string image : {"bzImage", "vmlinux", "vmlinux-64"}) {
        DYNAMIC_SECTION(image) {
            std::string kernel = *dir + "/" + image;
            if (image == "vmlinux-64") {
                auto copy = vmlinux_without_pvh_note(*dir + "/vmlinux");
                REQUIRE(copy);
                kernel = *copy;
            }
            const std::string marker = "ferry.test=" + image;
            // noxsave, clearcpuid: instructions this host's KVM emulator refuses (DESIGN.md §6).
            const std::string cmdline = "console=ttyS0 noxsave clearcpuid=popcnt,smap " + marker;
            Process p({ferry_bin(), "run", "--kernel", kernel, "--initrd", *dir + "/initramfs.cpio.lz4",
                       "--mem", "256M", "--cpus", std::to_string(cpus), "--cmdline", cmdline});
            std::vector<std::string> expect = {
                R"(Linux version 6\.1\.)",
                "Command line: " + std::regex_replace(cmdline, std::regex(R"(\.)"), R"(\$&)") + "\r?$",
                // The e820 map ferry gave it (vmm/boot/pvh.cpp build_e820, 256 MiB).
                R"(BIOS-e820: \[mem 0x0000000000000000-0x000000000009fbff\] usable)",
                R"(BIOS-e820: \[mem 0x000000000009fc00-0x00000000000fffff\] reserved)",
                R"(BIOS-e820: \[mem 0x0000000000100000-0x000000000fffffff\] usable)",
                R"(RAMDISK: \[mem 0x0)",
                // ferry's MP table (vmm/boot/mptable.cpp).
                R"(found SMP MP-table at \[mem 0x0009fc00-0x0009fc0f\])",
                R"(Intel MultiProcessor Specification v1\.4)",
                R"(MPTABLE: OEM ID: FERRY)",
                R"(Processor #0 \(Bootup-CPU\))",
                R"(Processor #1\b)",
                R"(IOAPIC\[0\]: apic_id 2, version 17, address 0xfec00000, GSI 0-23)",
                "Processors: " + std::to_string(cpus),
                "smpboot: Allowing " + std::to_string(cpus) + " CPUs, 0 hotplug CPUs",
            };
            auto missing = wait_all(p, expect, kLinuxBoot);
            if (image == "vmlinux-64") ::unlink(kernel.c_str());
            std::string missing_text;
            for (const auto& m : missing) missing_text += "  " + m + "\n";
            INFO("console:\n" << p.out_text() << "\nstderr:\n" << p.err() << "\nmissing:\n" << missing_text);
            CHECK(missing.empty());
            if (hw) {
                // Hardware virtualization: Linux reaches the initramfs' /init.
                auto missing_init = wait_all(p, {"^ferry-init: hello", "^ferry-init: cpus=" + std::to_string(cpus) + "\r?$"}, kLinuxBoot);
                CHECK(missing_init.empty());
                CHECK(p.wait_exit(kLinuxBoot) == 0);  // /init writes ferry's exit port
            } else {
                WARN("no VMX/SVM here: Linux stops at its int3 self-test under this KVM; checked the boot lines only");
            }
        }
    }
}
