// One thread per vCPU, driven by commands: pause, resume, stop. A command is
// delivered by setting kvm_run.immediate_exit under the thread's lock and kicking
// the thread with a signal, so KVM_RUN returns EINTR at once wherever it is.
// Exits are dispatched to the PIO/MMIO buses; exits that end the guest (triple
// fault, emulation failure) go to the machine's shutdown callback.
#pragma once

#include <pthread.h>
#include <sys/types.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include <spdlog/spdlog.h>

#include "devices/bus.hpp"
#include "devices/shutdown.hpp"
#include "vmm/kvm.hpp"

namespace ferry {

struct VcpuContext {
    const Bus* pio;
    const Bus* mmio;
    ShutdownFn shutdown;
    std::shared_ptr<spdlog::logger> log;
};

class VcpuThread {
public:
    VcpuThread(Vcpu& vcpu, VcpuContext ctx);
    VcpuThread(const VcpuThread&) = delete;
    VcpuThread& operator=(const VcpuThread&) = delete;
    ~VcpuThread();  // stops and joins

    // Starts the thread; it runs the guest unless `paused`.
    void start(bool paused);
    // Block until the vCPU is outside KVM_RUN and parked (or has exited).
    void pause();
    // Asks for a pause and returns at once: the thread leaves KVM_RUN before it enters
    // the guest again (kvm_run.immediate_exit), even one waiting on a page now.
    void request_pause();
    void resume();
    // Ends the thread and joins it. Idempotent.
    void stop();
    bool paused() const;
    // For a reset: a vCPU parked for good (it crashed or asked for a reset) may run again
    // once its state was restored. Call while it is paused.
    void revive();
    // The host thread id (gettid) of the vCPU thread; 0 before start().
    pid_t tid() const;

private:
    enum class Want { Run, Pause, Stop };
    enum class State { Idle, Running, Parked, Exited };

    void loop();
    void kick();  // caller holds mu_
    // Returns false when the vCPU must not enter the guest again.
    bool handle_exit();
    void park_forever_after(ShutdownRequest req);

    Vcpu& vcpu_;
    VcpuContext ctx_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    Want want_ = Want::Run;
    State state_ = State::Idle;
    bool dead_ = false;  // the guest vCPU crashed: never KVM_RUN again
    pthread_t handle_{};
    pid_t tid_ = 0;
    std::thread thread_;
};

// Installs the (empty) handler of the kick signal once per process.
void install_vcpu_kick_handler();
int vcpu_kick_signal();

}  // namespace ferry
