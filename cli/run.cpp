// `ferry run`: build the machine, start it, and serve the main event loop until
// the guest powers off, crashes, or a SIGINT/SIGTERM arrives.
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fmt/format.h>

#include "base/event_loop.hpp"
#include "base/fd.hpp"
#include "base/privileges.hpp"
#include "base/seccomp.hpp"
#include "cli/messages.hpp"
#include "cli/commands.hpp"
#include "monitor/machine_commands.hpp"
#include "monitor/migration_commands.hpp"
#include "monitor/migration_control.hpp"
#include "monitor/server.hpp"

namespace ferry {

namespace {

// ferry-query-memory's "postcopy" member: the THP coverage of guest RAM before and
// after the incoming postcopy's MADV_COLLAPSE (none before one completed here).
nlohmann::json postcopy_memory_figures(const MigrationControl* c) {
    if (!c) return {};
    auto f = c->fault_stats();
    if (!f || !f->thp_after_bytes) return {};
    return {{"postcopy", {{"thp-before-collapse-bytes", f->thp_before_bytes.value_or(0)}, {"thp-after-collapse-bytes", *f->thp_after_bytes}}}};
}

void errorln(const std::string& msg) { fmt::print(stderr, "ferry: {}\n", msg); }

}  // namespace

int cmd_run(const RunArgs& args, bool /*memory_report*/) {
    auto plan = plan_run(args);
    if (!plan) {
        errorln(user_message(plan.error()));
        return kExitUsage;
    }
    Fd serial_file(-1);
    switch (plan->serial.kind) {
        case SerialKind::Stdio: plan->machine.serial_fd = STDOUT_FILENO; break;
        case SerialKind::None: plan->machine.serial_fd = -1; break;
        case SerialKind::File:
            serial_file = Fd(::open(plan->serial.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
            if (!serial_file.valid()) {
                errorln(fmt::format("cannot open serial output '{}': {}", plan->serial.path, std::strerror(errno)));
                return kExitError;
            }
            plan->machine.serial_fd = serial_file.get();
            break;
    }

    // SIGINT/SIGTERM are read through a signalfd by the loop; block them before any
    // thread starts so every thread inherits the mask. A closed console must not
    // kill the VMM.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    ::signal(SIGPIPE, SIG_IGN);
    Fd sigfd(::signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!sigfd.valid()) {
        errorln(fmt::format("signalfd: {}", std::strerror(errno)));
        return kExitError;
    }

    auto loop = EventLoop::create();
    if (!loop) {
        errorln(user_message(loop.error()));
        return kExitError;
    }
    // The QMP socket comes first, so that a live one elsewhere fails fast; the loop
    // and the command table outlive the server, the server outlives the machine.
    CommandTable qmp_commands;
    std::unique_ptr<QmpServer> qmp;
    if (plan->qmp) {
        auto server = QmpServer::listen(*loop, *plan->qmp, qmp_commands);
        if (!server) {
            errorln(user_message(server.error()));
            return kExitError;
        }
        qmp = std::move(*server);
    }

    std::shared_ptr<const TlsCredentials> tls_creds;
    if (plan->tls_creds || plan->tls_psk) {
        // Read now, before the privilege drop and seccomp: a destination needs the
        // server's pair, a source the client's.
        bool in = plan->incoming.has_value();
        auto creds = plan->tls_creds ? TlsCredentials::load_x509(*plan->tls_creds, in, !in) : TlsCredentials::load_psk(*plan->tls_psk);
        if (!creds) {
            errorln(user_message(creds.error()));
            return kExitUsage;
        }
        tls_creds = std::move(*creds);
    }
    // Least privilege (base/privileges.hpp): what ferry keeps once set up is decided
    // before any thread starts; the main thread drops when the machine exists.
    privileges::set_policy(privileges::runtime_needs(plan->incoming.has_value()));
    // Seccomp (base/seccomp.hpp): each thread confines itself once set up; the main
    // thread last, just before it serves the loop.
    seccomp::set_mode(plan->seccomp);
    auto machine = Machine::create(plan->machine);
    if (!machine) {
        errorln(user_message(machine.error()));
        return kExitError;
    }
    if (auto dropped = privileges::drop_this_thread(); !dropped) {
        errorln("cannot give up capabilities after setup: " + dropped.error().message());
        return kExitError;
    }

    int exit_status = 0;
    nlohmann::json shutdown_event = host_shutdown_event_data("host-error");  // replaced by what ends the loop
    MigrationControl* migration_ptr = nullptr;  // set once the control exists (below)
    if (qmp) {
        auto added = add_machine_commands(qmp_commands, {machine->get(),
                                                         [&](std::string_view name, nlohmann::json data) { qmp->emit_event(name, std::move(data)); },
                                                         [&] {
                                                             shutdown_event = host_shutdown_event_data("host-qmp-quit");
                                                             exit_status = 0;
                                                             loop->stop();
                                                         },
                                                         [&]() -> nlohmann::json { return postcopy_memory_figures(migration_ptr); },
                                                         [&]() -> std::optional<std::string> {
                                                             return migration_ptr ? migration_ptr->owner() : std::nullopt;
                                                         }});
        if (!added) {
            errorln(user_message(added.error()));
            return kExitError;
        }
    }
    auto emit = [&](std::string_view name, nlohmann::json data) {
        if (qmp) qmp->emit_event(name, std::move(data));
    };
    auto migration = MigrationControl::create(*loop, **machine, plan->keep_source, emit, [&](int status, std::string msg) {
        errorln(msg);
        exit_status = status;
        shutdown_event = host_shutdown_event_data(status == 0 ? "host-migrated" : "host-error");
        loop->stop();
    });
    if (!migration) {
        errorln(user_message(migration.error()));
        return kExitError;
    }
    migration_ptr = migration->get();
    if (tls_creds) (*migration)->set_tls_credentials(std::move(tls_creds), plan->tls_authz);
    if (qmp) {
        if (auto added = add_migration_commands(qmp_commands, **migration); !added) {
            errorln(user_message(added.error()));
            return kExitError;
        }
    }

    auto ok = loop->watch(sigfd.get(), EPOLLIN, [&](uint32_t) {
        signalfd_siginfo si{};
        if (::read(sigfd.get(), &si, sizeof(si)) != sizeof(si)) return;
        errorln(fmt::format("terminating on signal {}", si.ssi_signo));
        exit_status = 0;
        shutdown_event = host_shutdown_event_data("host-signal");
        loop->stop();
    });
    if (ok) ok = loop->watch((*machine)->shutdown_fd(), EPOLLIN, [&](uint32_t) {
        auto req = (*machine)->shutdown_request();
        if (!req) return;
        shutdown_event = shutdown_event_data(*req);
        switch (req->kind) {
            case ShutdownKind::PowerOff:
                exit_status = guest_exit_status(req->code);
                if (req->code != 0)
                    errorln(fmt::format("guest powered off with code {} (ferry exits with {})", req->code, exit_status));
                break;
            case ShutdownKind::Reset:
                if (plan->reboot) {
                    auto rebooted = (*machine)->reset();
                    if (rebooted) {
                        emit("RESET", shutdown_event);  // {"guest": true, "reason": "guest-reset"}
                        shutdown_event = host_shutdown_event_data("host-error");  // as before the loop: replaced by what ends it
                        return;  // the guest boots again; ferry goes on
                    }
                    errorln(req->detail + "; cannot boot it again: " + rebooted.error().message() + "; exiting");
                } else {
                    errorln(req->detail + "; exiting (--no-reboot)");
                }
                exit_status = 0;
                break;
            case ShutdownKind::Crash:
                errorln("guest crashed: " + req->detail);
                exit_status = kExitGuestCrash;
                break;
            case ShutdownKind::HostRequest: exit_status = 0; break;
        }
        loop->stop();
    });
    if (!ok) {
        errorln(user_message(ok.error()));
        return kExitError;
    }
    if (plan->incoming) {
        // The guest arrives over the network; its vCPUs start when the source hands over.
        (*migration)->set_incoming_paused(plan->paused);
        if (*plan->incoming != "defer") {
            auto port = (*migration)->start_incoming(*plan->incoming);
            if (!port) {
                errorln(user_message(port.error()));
                return kExitError;
            }
            auto addr = parse_tcp_address(*plan->incoming);
            errorln(fmt::format("waiting for an incoming migration on tcp:{}:{}", addr ? addr->host : "?", *port));
        } else if (!qmp) {
            errorln("--incoming defer needs --qmp (the migration starts with QMP migrate-incoming)");
            return kExitUsage;
        }
    } else if (auto started = (*machine)->start(); !started) {
        errorln(user_message(started.error()));
        return kExitError;
    }
    if (auto confined = seccomp::confine_this_thread(seccomp::ThreadKind::Main); !confined) {
        errorln(user_message(confined.error()));
        return kExitError;
    }
    if (auto ran = loop->run(); !ran) {
        errorln(user_message(ran.error()));
        exit_status = kExitError;
    }
    migration->reset();  // cancels a migration still running, before the vCPUs go
    (*machine)->stop();
    if (qmp) {
        // QEMU's order: the quit reply (already queued), then SHUTDOWN; a client that
        // does not read gets a second to take it before the socket goes.
        qmp->emit_event("SHUTDOWN", std::move(shutdown_event));
        qmp->close(std::chrono::seconds(1));
    }
    return exit_status;
}

}  // namespace ferry
