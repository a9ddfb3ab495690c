#include <catch2/catch.hpp>

#include "cli/run_options.hpp"

using namespace ferry;

TEST_CASE("TOML config fills run options, the command line wins", "[config]") {
    auto file = parse_run_config(R"(
kernel = "/k.elf"
mem = "1G"
cpus = 2
thp = false
cmdline = "mode=idle"
disk = ["/a.img", "/b.img"]
net = "tap:t0"
no-reboot = true
no-acpi = true
)", "test.toml");
    REQUIRE(file);
    CHECK(*file->kernel == "/k.elf");
    CHECK(*file->cpus == "2");
    CHECK(*file->thp == "off");
    CHECK(file->disks.size() == 2);
    CHECK(file->nets == std::vector<std::string>{"tap:t0"});

    RunArgs cli;
    cli.mem = "512M";
    auto merged = merge_run_args(*file, cli);
    CHECK(*merged.mem == "512M");
    CHECK(*merged.kernel == "/k.elf");
    merged.disks.clear();
    auto plan = plan_run(merged);
    REQUIRE(plan);
    CHECK(plan->machine.mem_size == 512ull << 20);
    CHECK(plan->machine.cpus == 2);
    CHECK_FALSE(plan->machine.thp);
    CHECK(plan->machine.cmdline == "mode=idle");
    CHECK_FALSE(plan->reboot);
    CHECK_FALSE(plan->machine.acpi);
    RunArgs bare;
    bare.kernel = "/k.elf";
    auto plain = plan_run(bare);
    REQUIRE(plain);
    CHECK(plain->reboot);  // QEMU's default: a guest reset boots the guest again
    CHECK(plain->machine.acpi);  // ACPI tables unless --no-acpi
}

TEST_CASE("malformed and unknown TOML is an error with a position", "[config]") {
    auto bad = parse_run_config("kernel = \"unterminated\n", "bad.toml");
    REQUIRE_FALSE(bad);
    CHECK(bad.error().message().find("bad.toml:1") != std::string::npos);
    auto unknown = parse_run_config("kernal = \"/k\"\n", "u.toml");
    REQUIRE_FALSE(unknown);
    CHECK(unknown.error().message().find("unknown key 'kernal'") != std::string::npos);
    auto wrong_type = parse_run_config("mem = [1, 2]\n", "t.toml");
    REQUIRE_FALSE(wrong_type);
    CHECK(wrong_type.error().message().find("wrong type") != std::string::npos);
}

TEST_CASE("run options are validated with the option named", "[config]") {
    auto with = [](auto setter) {
        RunArgs a;
        a.kernel = "/k.elf";
        setter(a);
        return plan_run(a);
    };
    auto msg = [](const Result<RunPlan>& r) { return r ? std::string() : r.error().message(); };

    CHECK(msg(plan_run(RunArgs{})).find("--kernel") != std::string::npos);
    CHECK(msg(with([](RunArgs& a) { a.mem = "0"; })).find("--mem") != std::string::npos);
    CHECK(msg(with([](RunArgs& a) { a.mem = "lots"; })).find("--mem") != std::string::npos);
    CHECK(msg(with([](RunArgs& a) { a.mem = "3M"; })).find("2 MiB") != std::string::npos);
    CHECK(msg(with([](RunArgs& a) { a.cpus = "0"; })).find("--cpus") != std::string::npos);
    CHECK(msg(with([](RunArgs& a) { a.cpus = "65"; })).find("--cpus") != std::string::npos);
    CHECK(msg(with([](RunArgs& a) { a.cpus = "2x"; })).find("--cpus") != std::string::npos);
    CHECK(msg(with([](RunArgs& a) { a.thp = "yes"; })).find("--thp") != std::string::npos);
    CHECK(msg(with([](RunArgs& a) { a.no_reboot = "maybe"; })).find("no-reboot") != std::string::npos);
    CHECK(msg(with([](RunArgs& a) { a.no_acpi = "maybe"; })).find("no-acpi") != std::string::npos);
    CHECK(msg(with([](RunArgs& a) { a.serial = "tcp:1"; })).find("--serial") != std::string::npos);
    CHECK(msg(with([](RunArgs& a) { a.memory_backend = "ram"; })).find("--memory-backend") != std::string::npos);
    for (const char* bad : {"tap:", "user:x", "tap:x,mac=zz", "tap:x,mac=01:00:00:00:00:01", "tap:x,mtu=9000", "tap:x,mac=02:00:00:00:00:01x"})
        CHECK(msg(with([bad](RunArgs& a) { a.nets = {bad}; })).find("--net") != std::string::npos);
    auto nets = with([](RunArgs& a) { a.nets = {"tap:t0", "tap:t1,mac=02:AB:00:00:00:01", "tap:t2"}; });
    REQUIRE(nets);
    REQUIRE(nets->machine.nets.size() == 3);
    CHECK(nets->machine.nets[1].tap == "t1");
    CHECK(virtio::format_mac(nets->machine.nets[0].mac) == "52:54:00:12:34:56");
    CHECK(virtio::format_mac(nets->machine.nets[1].mac) == "02:ab:00:00:00:01");
    CHECK(virtio::format_mac(nets->machine.nets[2].mac) == "52:54:00:12:34:58");

    auto ok = with([](RunArgs& a) { a.serial = "file:/tmp/x"; a.mem = "64M"; a.memory_backend = "memfd"; });
    REQUIRE(ok);
    CHECK(ok->serial.kind == SerialKind::File);
    CHECK(ok->serial.path == "/tmp/x");
    CHECK(ok->machine.backend == Backend::Memfd);
}
