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
#include "cli/commands.hpp"

namespace ferry {

namespace {

void errorln(const std::string& msg) { fmt::print(stderr, "ferry: {}\n", msg); }

}  // namespace

int cmd_run(const RunArgs& args, bool /*memory_report*/) {
    auto plan = plan_run(args);
    if (!plan) {
        errorln(plan.error().message());
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

    auto machine = Machine::create(plan->machine);
    if (!machine) {
        errorln(machine.error().message());
        return kExitError;
    }
    auto loop = EventLoop::create();
    if (!loop) {
        errorln(loop.error().message());
        return kExitError;
    }

    int exit_status = 0;
    auto ok = loop->watch(sigfd.get(), EPOLLIN, [&](uint32_t) {
        signalfd_siginfo si{};
        if (::read(sigfd.get(), &si, sizeof(si)) != sizeof(si)) return;
        errorln(fmt::format("terminating on signal {}", si.ssi_signo));
        exit_status = 0;
        loop->stop();
    });
    if (ok) ok = loop->watch((*machine)->shutdown_fd(), EPOLLIN, [&](uint32_t) {
        auto req = (*machine)->shutdown_request();
        if (!req) return;
        switch (req->kind) {
            case ShutdownKind::PowerOff:
                exit_status = req->code;
                if (req->code != 0) errorln(fmt::format("guest powered off with status {}", req->code));
                break;
            case ShutdownKind::Reset:
                errorln(req->detail + "; ferry does not reboot guests, exiting");
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
        errorln(ok.error().message());
        return kExitError;
    }
    if (auto started = (*machine)->start(); !started) {
        errorln(started.error().message());
        return kExitError;
    }
    if (auto ran = loop->run(); !ran) {
        errorln(ran.error().message());
        exit_status = kExitError;
    }
    (*machine)->stop();
    return exit_status;
}

}  // namespace ferry
