// The `ferry` executable: option parsing (CLI11) and dispatch to the subcommands.
// Errors are one line on stderr and a non-zero exit; nothing here aborts.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <exception>
#include <string>

#include "base/file.hpp"
#include "base/log.hpp"
#include "cli/commands.hpp"

namespace {

constexpr const char* kRunHelp =
    "Boot a guest kernel (a PVH ELF: the test guest, or a Linux vmlinux with a PVH note) on /dev/kvm.\n"
    "The guest's serial console goes to stdout; ferry's own messages to stderr.\n"
    "Exit status: the guest's power-off code (port 0xf4), 0 after SIGINT/SIGTERM or a guest reset,\n"
    "1 when ferry cannot run the guest, 2 for bad options, 3 when the guest crashes (triple fault).";

int not_implemented(const char* what) {
    fmt::print(stderr, "ferry: {} is not implemented yet\n", what);
    return 1;
}

void add_run_options(CLI::App& run, ferry::RunArgs& a, std::string& config) {
    run.add_option("--config", config, "TOML file with any of these options (the command line wins)");
    run.add_option("--kernel", a.kernel, "guest kernel: PVH ELF image")->type_name("PATH");
    run.add_option("--initrd", a.initrd, "initrd, handed to the kernel as PVH module 0")->type_name("PATH");
    run.add_option("--cmdline", a.cmdline, "kernel command line")->type_name("STR");
    run.add_option("--mem", a.mem, "guest RAM, with K/M/G suffix, multiple of 2M (default 256M)")->type_name("SIZE");
    run.add_option("--cpus", a.cpus, "number of vCPUs, 1-64 (default 1); the guest starts the APs")->type_name("N");
    run.add_option("--serial", a.serial, "console: stdio (default), file:PATH or none")->type_name("stdio|file:PATH|none");
    run.add_option("--memory-backend", a.memory_backend, "guest RAM backing: anon (default), memfd, hugetlbfs")
        ->type_name("anon|memfd|hugetlbfs");
    run.add_option("--thp", a.thp, "transparent huge pages on guest RAM (default on)")->type_name("on|off");
    run.add_option("--qmp", a.qmp, "QMP monitor socket (not implemented yet)")->type_name("PATH");
    run.add_option("--ksm", a.ksm, "KSM merging of guest RAM (not implemented yet)")->type_name("on|off");
    run.add_option("--numa-node", a.numa_node, "host NUMA placement (not implemented yet)")
        ->type_name("NODE[:bind|preferred|interleave]");
    run.add_option("--disk", a.disks, "virtio-blk disk image (not implemented yet)")->type_name("PATH");
    run.add_option("--net", a.net, "virtio-net on a tap device (not implemented yet)")->type_name("tap:NAME");
    run.add_option("--incoming", a.incoming, "wait for an incoming migration (not implemented yet)")
        ->type_name("tcp:HOST:PORT|defer");
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"ferry: a KVM virtual machine monitor built around live migration", "ferry"};
    app.require_subcommand(1);
    app.set_version_flag("--version", std::string("ferry ") + FERRY_VERSION);
    app.add_option_function<std::string>("--log-level", [](const std::string& l) { ferry::set_log_level(l); },
                                         "trace, debug, info, warn (default), error; or FERRY_LOG");

    ferry::RunArgs run_args;
    std::string config;
    auto* run = app.add_subcommand("run", "boot a guest");
    run->footer(kRunHelp);
    add_run_options(*run, run_args, config);

    auto* migrate = app.add_subcommand("migrate", "live-migrate a running guest (not implemented yet)");
    migrate->allow_extras();
    auto* qmp = app.add_subcommand("qmp", "send one QMP command to a running ferry (not implemented yet)");
    qmp->allow_extras();

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp&) {
        fmt::print("{}", app.help());
        return 0;
    } catch (const CLI::CallForVersion& e) {
        fmt::print("{}\n", e.what());
        return 0;
    } catch (const CLI::ParseError& e) {
        std::string msg = e.what();
        if (auto nl = msg.find('\n'); nl != std::string::npos) msg.resize(nl);
        fmt::print(stderr, "ferry: {} (see ferry --help)\n", msg);
        return ferry::kExitUsage;
    }

    try {
        if (*run) {
            if (!config.empty()) {
                auto text = ferry::read_file(config, 1 << 20, "config");
                if (!text) {
                    fmt::print(stderr, "ferry: {}\n", text.error().message());
                    return ferry::kExitUsage;
                }
                auto file_args = ferry::parse_run_config(std::string_view(reinterpret_cast<const char*>(text->data()), text->size()), config);
                if (!file_args) {
                    fmt::print(stderr, "ferry: {}\n", file_args.error().message());
                    return ferry::kExitUsage;
                }
                run_args = ferry::merge_run_args(std::move(*file_args), run_args);
            }
            return ferry::cmd_run(run_args, false);
        }
        if (*migrate) return not_implemented("ferry migrate");
        if (*qmp) return not_implemented("ferry qmp");
    } catch (const std::exception& e) {
        fmt::print(stderr, "ferry: {}\n", e.what());
        return ferry::kExitError;
    }
    return ferry::kExitUsage;
}
