// Bad input to `ferry run`: one clear line on stderr, a non-zero exit, never a
// signal (abort, segfault) or a core dump.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>

#include "process.hpp"

using namespace ferry::test;
using namespace std::chrono_literals;

namespace {


void expect_clean_error(std::vector<std::string> args, const std::string& needle) {
    std::vector<std::string> argv{ferry_bin()};
    argv.insert(argv.end(), args.begin(), args.end());
    Process p(argv);
    auto rc = p.wait_exit(60s);
    INFO("args: " << Catch::Detail::stringify(args) << "\nstderr: " << p.err() << "\nstdout: " << p.out_text());
    REQUIRE(rc);
    CHECK(*rc != 0);
    CHECK(*rc < 128);  // not killed by a signal
    CHECK(p.err().rfind("ferry: ", 0) == 0);
    CHECK(std::count(p.err().begin(), p.err().end(), '\n') == 1);
    CHECK(p.err().find(needle) != std::string::npos);
}

std::string truncated_guest() {
    std::ifstream f(testguest_elf(), std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    return write_temp("truncated.elf", all.substr(0, all.size() / 3));
}

}  // namespace

TEST_CASE("bad input gives one clear error line", "[kvm][cli]") {
    const std::string guest = testguest_elf();
    expect_clean_error({"run", "--kernel", "/nonexistent/kernel.elf"}, "No such file");
    expect_clean_error({"run", "--mem", "64M"}, "--kernel");
    expect_clean_error({"run", "--kernel", write_temp("text.elf", "this is not an ELF file\n")}, "not an ELF");
    expect_clean_error({"run", "--kernel", truncated_guest()}, "outside the file");
    expect_clean_error({"run", "--kernel", guest, "--mem", "0"}, "--mem");
    expect_clean_error({"run", "--kernel", guest, "--mem", "64T"}, "--mem");
    expect_clean_error({"run", "--kernel", guest, "--mem", "16000P"}, "--mem");
    expect_clean_error({"run", "--kernel", guest, "--mem", "4T"}, "guest RAM");
    expect_clean_error({"run", "--kernel", guest, "--cpus", "0"}, "--cpus");
    expect_clean_error({"run", "--kernel", guest, "--frobnicate"}, "--frobnicate");
    expect_clean_error({"run", "--config", write_temp("bad.toml", "kernel = [unclosed\n")}, "bad.toml");
    expect_clean_error({"run", "--config", "/nonexistent.toml"}, "config");
    expect_clean_error({"migrate"}, "--qmp");
    expect_clean_error({"migrate", "--qmp", "/nonexistent.sock", "--to", "tcp:127.0.0.1:1"}, "nonexistent");
    expect_clean_error({"run", "--incoming", "udp:1:2"}, "--incoming");
    expect_clean_error({}, "subcommand");
    for (const char* name : {"text.elf", "truncated.elf", "bad.toml"})
        ::unlink(("/tmp/ferry-clitest-" + std::to_string(::getpid()) + "-" + name).c_str());
}

TEST_CASE("a TOML config boots the guest", "[kvm][cli]") {
    auto cfg = write_temp("ok.toml", "kernel = \"" + testguest_elf() + "\"\nmem = \"64M\"\ncmdline = \"mode=idle ticks=1\"\n");
    Process p({ferry_bin(), "run", "--config", cfg});
    auto rc = p.wait_exit(60s);
    ::unlink(cfg.c_str());
    INFO(p.err());
    REQUIRE(rc == 0);
    CHECK(p.out_text().find("guest: tick=1 ") != std::string::npos);
}
