#include "vmm/vcpu_thread.hpp"

#include "base/seccomp.hpp"

#include <unistd.h>

#include <csignal>
#include <cstring>
#include <fmt/format.h>

namespace ferry {

namespace {
void kick_handler(int) {}
}  // namespace

int vcpu_kick_signal() { return SIGUSR1; }

void install_vcpu_kick_handler() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa {};
        sa.sa_handler = kick_handler;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = 0;  // no SA_RESTART: KVM_RUN must return EINTR
        sigaction(vcpu_kick_signal(), &sa, nullptr);
    });
}

VcpuThread::VcpuThread(Vcpu& vcpu, VcpuContext ctx) : vcpu_(vcpu), ctx_(std::move(ctx)) { install_vcpu_kick_handler(); }

VcpuThread::~VcpuThread() { stop(); }

void VcpuThread::start(bool paused) {
    std::unique_lock lock(mu_);
    if (thread_.joinable()) return;
    want_ = paused ? Want::Pause : Want::Run;
    tid_ = 0;
    thread_ = std::thread([this] { loop(); });
    handle_ = thread_.native_handle();
    cv_.wait(lock, [&] { return tid_ != 0; });  // the thread publishes its tid first
}

pid_t VcpuThread::tid() const {
    std::lock_guard lock(mu_);
    return tid_;
}

void VcpuThread::kick() {
    vcpu_.run_struct()->immediate_exit = 1;
    if (state_ == State::Running) pthread_kill(handle_, vcpu_kick_signal());
}

void VcpuThread::pause() {
    std::unique_lock lock(mu_);
    if (!thread_.joinable() || want_ == Want::Stop) return;
    want_ = Want::Pause;
    kick();
    cv_.wait(lock, [&] { return state_ == State::Parked || state_ == State::Exited; });
}

void VcpuThread::request_pause() {
    std::lock_guard lock(mu_);
    if (!thread_.joinable() || want_ == Want::Stop) return;
    want_ = Want::Pause;
    kick();
}

void VcpuThread::resume() {
    std::lock_guard lock(mu_);
    if (want_ == Want::Stop) return;
    want_ = Want::Run;
    cv_.notify_all();
}

bool VcpuThread::paused() const {
    std::lock_guard lock(mu_);
    return state_ == State::Parked;
}

void VcpuThread::revive() {
    std::lock_guard lock(mu_);
    dead_ = false;
}

void VcpuThread::stop() {
    {
        std::lock_guard lock(mu_);
        if (!thread_.joinable()) return;
        want_ = Want::Stop;
        kick();
        cv_.notify_all();
    }
    thread_.join();
}

void VcpuThread::loop() {
    // The kick signal must reach this thread; the main thread blocks the others.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, vcpu_kick_signal());
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);

    {
        std::lock_guard lock(mu_);
        tid_ = ::gettid();
        cv_.notify_all();
    }
    if (auto ok = seccomp::confine_this_thread(seccomp::ThreadKind::Vcpu); !ok) {
        park_forever_after({ShutdownKind::Crash, 0, fmt::format("vCPU {}: {}", vcpu_.id(), ok.error().message())});
    }

    kvm_run* run = vcpu_.run_struct();
    bool exit_pending = false;  // an exit was handled; KVM completes it on the next KVM_RUN
    for (;;) {
        {
            std::unique_lock lock(mu_);
            if (exit_pending && want_ != Want::Run && !dead_) {
                // KVM finishes an I/O or MMIO exit (an IN's data into RAX, RIP past the
                // instruction) only when KVM_RUN is entered again, and that pending work is
                // in no state userspace can save (KVM API, "KVM_RUN"). Enter it once with
                // immediate_exit set, which completes the exit and runs no guest
                // instruction, so a parked vCPU's registers are whole: a migration or a
                // reset would otherwise run the last I/O instruction twice.
                // Completing may need userspace again (the next part of a split MMIO
                // access or of a string I/O): that exit is handled and completed in turn.
                run->immediate_exit = 1;
                lock.unlock();
                int err = vcpu_.run();
                exit_pending = err == 0;
                if (err == 0 && !handle_exit()) {
                    std::lock_guard dead_lock(mu_);
                    dead_ = true;
                } else if (err != 0 && err != EINTR && err != EAGAIN) {
                    park_forever_after({ShutdownKind::Crash, 0, fmt::format("vCPU {}: KVM_RUN failed: {}", vcpu_.id(), std::strerror(err))});
                }
                continue;
            }
            run->immediate_exit = 0;
            while (want_ == Want::Pause || (dead_ && want_ != Want::Stop)) {
                state_ = State::Parked;
                cv_.notify_all();
                cv_.wait(lock);
                run->immediate_exit = 0;
            }
            if (want_ == Want::Stop) {
                state_ = State::Exited;
                cv_.notify_all();
                return;
            }
            state_ = State::Running;
        }
        int err = vcpu_.run();
        if (err == EINTR || err == EAGAIN) continue;  // a kick, or an AP woken by SIPI
        if (err != 0) {
            park_forever_after({ShutdownKind::Crash, 0, fmt::format("vCPU {}: KVM_RUN failed: {}", vcpu_.id(), std::strerror(err))});
            continue;
        }
        exit_pending = true;
        if (!handle_exit()) {
            std::lock_guard lock(mu_);
            dead_ = true;
        }
    }
}

void VcpuThread::park_forever_after(ShutdownRequest req) {
    {
        std::lock_guard lock(mu_);
        dead_ = true;
    }
    ctx_.shutdown(std::move(req));
}

bool VcpuThread::handle_exit() {
    kvm_run* run = vcpu_.run_struct();
    switch (run->exit_reason) {
        case KVM_EXIT_IO: {
            auto& io = run->io;
            // SAFETY: KVM places `count` items of `size` bytes at data_offset inside
            // the kvm_run mapping; size is 1, 2 or 4 and the area fits the mapping.
            uint8_t* base = reinterpret_cast<uint8_t*>(run) + io.data_offset;
            for (uint32_t i = 0; i < io.count; ++i) {
                std::span<uint8_t> data(base + size_t{i} * io.size, io.size);
                if (io.direction == KVM_EXIT_IO_OUT) {
                    if (!ctx_.pio->write(io.port, data))
                        ctx_.log->debug("vCPU {}: unhandled out {:#x} <- {} bytes", vcpu_.id(), io.port, io.size);
                } else if (!ctx_.pio->read(io.port, data)) {
                    ctx_.log->debug("vCPU {}: unhandled in {:#x}", vcpu_.id(), io.port);
                }
            }
            return true;
        }
        case KVM_EXIT_MMIO: {
            auto& m = run->mmio;
            uint32_t len = std::min<uint32_t>(m.len, sizeof(m.data));
            std::span<uint8_t> data(m.data, len);
            if (m.is_write) {
                if (!ctx_.mmio->write(m.phys_addr, data)) ctx_.log->debug("vCPU {}: unhandled MMIO write {:#x}", vcpu_.id(), m.phys_addr);
            } else if (!ctx_.mmio->read(m.phys_addr, data)) {
                ctx_.log->debug("vCPU {}: unhandled MMIO read {:#x}", vcpu_.id(), m.phys_addr);
            }
            return true;
        }
        case KVM_EXIT_INTR:
        case KVM_EXIT_HLT:
        case KVM_EXIT_IRQ_WINDOW_OPEN:
            return true;
        case KVM_EXIT_SHUTDOWN:
            ctx_.shutdown({ShutdownKind::Crash, 0, fmt::format("vCPU {}: triple fault", vcpu_.id())});
            return false;
        case KVM_EXIT_SYSTEM_EVENT:
            if (run->system_event.type == KVM_SYSTEM_EVENT_RESET) {
                ctx_.shutdown({ShutdownKind::Reset, 0, fmt::format("vCPU {}: guest reset", vcpu_.id())});
            } else {
                ctx_.shutdown({ShutdownKind::PowerOff, 0, fmt::format("vCPU {}: guest system event {}", vcpu_.id(), run->system_event.type)});
            }
            return false;
        case KVM_EXIT_INTERNAL_ERROR: {
            auto regs = vcpu_.get_regs();
            ctx_.shutdown({ShutdownKind::Crash, 0,
                           fmt::format("vCPU {}: KVM internal error (suberror {}, {}) at rip {:#x}", vcpu_.id(),
                                       run->internal.suberror,
                                       run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION ? "emulation failure" : "other",
                                       regs ? regs->rip : 0)});
            return false;
        }
        case KVM_EXIT_FAIL_ENTRY:
            ctx_.shutdown({ShutdownKind::Crash, 0,
                           fmt::format("vCPU {}: VM entry failed (reason {:#x})", vcpu_.id(),
                                       static_cast<uint64_t>(run->fail_entry.hardware_entry_failure_reason))});
            return false;
        default:
            ctx_.shutdown({ShutdownKind::Crash, 0, fmt::format("vCPU {}: unexpected KVM exit {}", vcpu_.id(), run->exit_reason)});
            return false;
    }
}

}  // namespace ferry
