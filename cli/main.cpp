// The `ferry` executable: option parsing (CLI11) and dispatch to the subcommands.
// Errors are one line on stderr and a non-zero exit; nothing here aborts.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <exception>
#include <string>

#include "base/file.hpp"
#include "base/log.hpp"
#include "cli/messages.hpp"
#include "cli/commands.hpp"

namespace {

constexpr const char* kRunHelp =
    "Boot a guest kernel (a PVH ELF such as the test guest, a Linux bzImage or vmlinux) on /dev/kvm.\n"
    "The guest's serial console goes to stdout; ferry's own messages to stderr.\n"
    "Exit status: the guest's power-off code (port 0xf4; 0 for an ACPI power-off), 0 after SIGINT/SIGTERM or a guest reset,\n"
    "1 when ferry cannot run the guest, 2 for bad options, 3 when the guest crashes (triple fault).";

constexpr const char* kQmpHelp =
    "Connects to PATH, negotiates capabilities, executes COMMAND and prints its `return` value as JSON.\n"
    "Exit status: 0 on success, 1 on an error reply (class and desc on stderr) or a broken exchange,\n"
    "2 for bad options or ARGS-JSON, or when nothing listens on PATH.";


void add_run_options(CLI::App& run, ferry::RunArgs& a, std::string& config) {
    run.add_option("--config", config, "TOML file with any of these options (the command line wins)");
    run.add_option("--kernel", a.kernel, "guest kernel: a PVH ELF (the test guest), a Linux bzImage, or a Linux vmlinux")->type_name("PATH");
    run.add_option("--initrd", a.initrd, "initrd (Linux: boot_params ramdisk; PVH: module 0)")->type_name("PATH");
    run.add_option("--cmdline", a.cmdline, "kernel command line")->type_name("STR");
    run.add_option("--mem", a.mem, "guest RAM, with K/M/G suffix, multiple of 2M (default 256M)")->type_name("SIZE");
    run.add_option("--cpus", a.cpus, "number of vCPUs, 1-64 (default 1); the guest starts the APs")->type_name("N");
    run.add_option("--serial", a.serial, "console: stdio (default), file:PATH or none")->type_name("stdio|file:PATH|none");
    run.add_option("--memory-backend", a.memory_backend, "guest RAM backing: anon (default), memfd, hugetlbfs (needs 2 MiB pages reserved in /proc/sys/vm/nr_hugepages)")
        ->type_name("anon|memfd|hugetlbfs");
    run.add_option("--thp", a.thp, "transparent huge pages on guest RAM: MADV_HUGEPAGE / MADV_NOHUGEPAGE (default on)")->type_name("on|off");
    run.add_option("--qmp", a.qmp, "QMP monitor socket, created mode 0600 (see docs/qmp.md)")->type_name("PATH");
    run.add_option("--ksm", a.ksm,
                   "KSM merging of guest RAM: MADV_MERGEABLE, anon backend only (default off); warns when ksmd is not "
                   "running (ferry never changes /sys/kernel/mm/ksm)")
        ->type_name("on|off");
    run.add_option("--numa-node", a.numa_node,
                   "place guest RAM on host NUMA node(s) with mbind, e.g. 0, 0:preferred, 0-1:interleave (default bind)")
        ->type_name("NODES[:bind|preferred|interleave]");
    run.add_flag_callback("--prealloc", [&a] { a.prealloc = "on"; },
                          "populate all guest RAM before boot (MADV_POPULATE_WRITE), with progress on stderr");
    run.add_flag_callback("--memory-report", [&a] { a.memory_report = "on"; },
                          "when the guest stops, print per region what the host gave guest RAM (huge pages, KSM, NUMA "
                          "nodes) on stderr; see docs/memory.md");
    run.add_option("--disk", a.disks, "virtio-blk disk: a raw image file; repeatable; \",readonly\" refuses writes")->type_name("PATH[,readonly]");
    run.add_option("--net", a.nets,
                   "virtio-net on an existing tap device (ip tuntap add NAME mode tap), or a new one with CAP_NET_ADMIN; "
                   "repeatable; default MAC 52:54:00:12:34:56 (+ index)")
        ->type_name("tap:NAME[,mac=MAC]");
    run.add_option("--cpu", a.cpu,
                   "CPU model the guest sees: host (default: all KVM offers here) or baseline (x86-64-v2 + AES, XSAVE, "
                   "x2APIC: any x86-64 server), optionally minus features (host,-avx512f); a migration destination "
                   "refuses a guest using features its model lacks, and keeps the source's CPUID")
        ->type_name("host|baseline[,-FEATURE...]");
    run.add_flag_callback("--no-reboot", [&a] { a.no_reboot = "on"; },
                          "when the guest resets itself (i8042, KVM system event), exit instead of booting it again "
                          "(QEMU's -no-reboot; the default reboots, as QEMU does)");
    run.add_flag_callback("--no-acpi", [&a] { a.no_acpi = "on"; },
                          "give the guest no ACPI tables: Linux then finds its CPUs in the MP table and its virtio devices "
                          "in the virtio_mmio.device= words ferry appends, and cannot power the machine off (the default: "
                          "hardware-reduced ACPI, whose S5 ends ferry with status 0; docs/linux.md)");
    run.add_option("--tls-creds", a.tls_creds,
                   "migrate over TLS 1.3 with X.509 certificates from DIR, in QEMU's layout: ca-cert.pem, server-cert.pem + "
                   "server-key.pem (to receive), client-cert.pem + client-key.pem (to send); both ends check each other "
                   "(docs/security.md). QMP knows them as tls-creds \"tls0\", the default once given")
        ->type_name("DIR");
    run.add_option("--tls-psk", a.tls_psk,
                   "migrate over TLS 1.3 with a pre-shared key: a file of IDENTITY:HEXKEY lines (QEMU's keys.psk); a sender "
                   "uses the first")
        ->type_name("FILE");
    run.add_option("--tls-authz", a.tls_authz,
                   "with --tls-creds/--tls-psk, as a destination: let in only this client (its certificate's CN or RFC 2253 "
                   "DN, or its PSK identity)")
        ->type_name("NAME");
    run.add_option("--seccomp", a.seccomp,
                   "seccomp filters, one per kind of thread (main, vCPU, virtio-blk, virtio-net, migration): on (default) "
                   "ends ferry with SIGSYS on a call outside a thread's list; log lets it through and has the kernel's "
                   "audit log record it; off installs none (docs/security.md)")
        ->type_name("on|log|off");
    run.add_flag_callback("--keep-source", [&a] { a.keep_source = "on"; },
                          "after migrating the guest away, keep this process (paused, postmigrate) instead of exiting");
    run.add_flag_callback("--paused", [&a] { a.paused = "on"; },
                          "with --incoming: leave the arrived guest paused until QMP cont (QEMU's -S); a postcopy "
                          "migration still completes, its pages streamed in the background");
    run.add_option("--incoming", a.incoming,
                   "run no guest code; receive a live migration on tcp:HOST:PORT (port 0 picks one, printed on stderr), "
                   "or wait for QMP migrate-incoming (defer); --kernel is then not needed")
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

    ferry::MigrateArgs mig;
    auto* migrate = app.add_subcommand("migrate", "live-migrate a running guest to another ferry (ferry run --incoming)");
    migrate->footer(
        "Talks to the source through its QMP socket: sets the parameters, starts the migration and reports until it ends.\n"
        "Exit status: 0 when the guest runs on the destination, 1 when the migration failed or was cancelled (Ctrl-C\n"
        "cancels it; the guest keeps running on the source), 2 for bad options, 4 when a postcopy paused because its\n"
        "connection broke: the guest runs on the destination and every page it lacks is still on the source. Recover it:\n"
        "  ferry qmp --qmp DEST.sock migrate-recover '{\"uri\": \"tcp:0.0.0.0:4445\"}'\n"
        "  ferry migrate --qmp SRC.sock --resume --to tcp:DEST:4445");
    migrate->add_option("--qmp", mig.qmp, "QMP socket of the source ferry")->type_name("PATH")->required();
    migrate->add_option("--to", mig.to, "the destination, started with ferry run --incoming")->type_name("tcp:HOST:PORT")->required();
    migrate->add_option("--mode", mig.mode,
                        "precopy (default): dirty-page rounds, then a short pause; postcopy: switch at once, the destination "
                        "runs and fetches missing pages on fault (userfaultfd) while the rest streams; hybrid: precopy rounds, "
                        "switching to postcopy when a round no longer halves the dirty set")
        ->type_name("precopy|postcopy|hybrid");
    migrate->add_option("--downtime-limit", mig.downtime_limit, "largest pause allowed for the last round (default 300)")
        ->type_name("MS");
    migrate->add_option("--max-bandwidth", mig.max_bandwidth, "cap in bytes/s, K/M/G suffixes (default: none)")->type_name("RATE");
    migrate->add_flag("--postcopy-preempt", mig.postcopy_preempt,
                      "postcopy/hybrid: send the pages the destination faults on over a second TCP connection of their "
                      "own (QEMU's postcopy-preempt) instead of between the background stream's small batches");
    migrate->add_flag("--tls", mig.tls,
                      "migrate over TLS with the credentials the source was started with (ferry run --tls-creds or "
                      "--tls-psk; the destination needs the same); fails if it has none");
    migrate->add_flag("--resume", mig.resume,
                      "recover a postcopy migration that paused (postcopy-paused) through the address given to QMP "
                      "migrate-recover on the destination; the pages that did not arrive are sent again");
    auto* progress_flag = migrate->add_flag("--progress", mig.progress, "show progress on stderr (percent, rate, remaining, dirty rate, round)");
    migrate->add_flag("--json", mig.json, "print each query-migrate reply as one JSON line on stdout, for scripts")
        ->excludes(progress_flag);
    ferry::QmpArgs qmp_args;
    auto* qmp = app.add_subcommand("qmp", "send one QMP command to a running ferry and print its reply");
    qmp->footer(kQmpHelp);
    qmp->add_option("--qmp", qmp_args.socket, "the QMP socket of a `ferry run --qmp PATH`")->type_name("PATH")->required();
    qmp->add_option("--timeout", qmp_args.timeout_s, "seconds to wait for the server (default 30)")->type_name("SECONDS");
    qmp->add_option("command", qmp_args.command, "QMP command, e.g. query-status")->type_name("COMMAND")->required();
    qmp->add_option("args", qmp_args.args, "its arguments, a JSON object, e.g. '{\"enable\": []}'")->type_name("ARGS-JSON");

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
            return ferry::cmd_run(run_args, run_args.memory_report == "on");
        }
        if (*migrate) return ferry::cmd_migrate(mig);
        if (*qmp) return ferry::cmd_qmp(qmp_args);
    } catch (const std::exception& e) {
        fmt::print(stderr, "ferry: {}\n", e.what());
        return ferry::kExitError;
    }
    return ferry::kExitUsage;
}
