#include "base/seccomp.hpp"

#include <seccomp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>

#include <fmt/format.h>

#include "base/log.hpp"

namespace ferry::seccomp {

namespace {

// What every thread does whatever its kind: allocate (glibc's malloc maps and
// trims arenas), lock (futex), log to stderr, read the clock, sleep, take a signal
// (the vCPU kick, SIGSYS itself), and end.
constexpr const char* kCommon[] = {
    "futex", "exit", "exit_group", "rt_sigreturn", "rt_sigprocmask", "restart_syscall",
    "mmap", "munmap", "mremap", "mprotect", "madvise", "brk",
    "write", "writev", "clock_gettime", "clock_nanosleep", "nanosleep", "sched_yield", "gettid", "getpid",
};

// A vCPU thread: KVM_RUN and the register ioctls (ioctl(KVM)), the serial port's
// output and the ioeventfd-less notifications (write, in kCommon), reading eventfds.
constexpr const char* kVcpu[] = {"read"};

// virtio-blk's worker: io_uring submissions and completions, its eventfds (the
// queue's ioeventfd, the stop fd, the irqfd) and the synchronous fallbacks.
constexpr const char* kBlock[] = {
    "io_uring_enter", "read", "ppoll", "poll", "epoll_wait", "epoll_pwait",
    "pread64", "pwrite64", "preadv", "pwritev", "fsync", "fdatasync",
};

// virtio-net's worker: frames from and to the tap, its eventfds, the timer of its
// announcements after a migration (timerfd_settime).
constexpr const char* kNet[] = {
    "read", "readv", "writev", "ppoll", "poll", "epoll_wait", "epoll_pwait", "timerfd_settime",
};

// Migration threads (sender, receiver, return path, urgent pages, userfaults): TCP,
// the dirty log and userfaultfd (ioctl(KVM), ioctl(UFFD)), /dev/userfaultfd or the
// userfaultfd call, /proc/self/smaps and pagemap for the THP and residency figures
// (pread64), NUMA placement figures (get_mempolicy, move_pages), MADV_COLLAPSE
// (madvise), pausing vCPUs (tgkill: the kick), the arrived guest's network cards
// announcing it (their timer: timerfd_settime), and the threads they start, which
// confine themselves in turn (seccomp, prctl(PR_SET_NAME, PR_SET_NO_NEW_PRIVS)).
constexpr const char* kMigration[] = {
    "read", "readv", "pread64", "recvfrom", "recvmsg", "sendto", "sendmsg", "poll", "ppoll", "tgkill", "get_mempolicy", "move_pages",
    "seccomp", "timerfd_settime",
    "socket", "connect", "bind", "listen", "accept4", "shutdown", "setsockopt", "getsockopt", "getsockname",
    "getpeername", "close", "openat", "fstat", "newfstatat", "lseek", "fcntl", "userfaultfd", "eventfd2",
    "clone", "clone3", "set_robust_list", "rseq", "sched_getaffinity", "getrandom",
};

// The main thread: the event loop (epoll, the signalfd, timers), QMP (accept4,
// SO_PEERCRED), machine control (vCPU kicks with tgkill, reset), and everything a
// vCPU or migration thread it starts needs (filters stack), which kMigration lists.
constexpr const char* kMain[] = {
    "epoll_wait", "epoll_pwait", "epoll_ctl", "timerfd_create", "timerfd_settime", "tgkill", "unlink", "getuid",
    "geteuid", "getgid", "getegid",
};

// Calls allowed only with some arguments.
enum ArgRule : unsigned {
    kNoRule = 0,
    kKvmIoctl = 1,      // ioctl with KVM's request type (0xAE)
    kUffdIoctl = 2,     // ioctl with userfaultfd's (0xAA)
    kThreadPrctl = 4,   // prctl(PR_SET_NAME) and prctl(PR_SET_NO_NEW_PRIVS): a new thread confining itself
};

struct KindSpec {
    std::span<const char* const> lists[3];
    unsigned rules;  // ArgRule bits
};

KindSpec spec(ThreadKind k) {
    switch (k) {
        case ThreadKind::Vcpu: return {{kVcpu, {}, {}}, kKvmIoctl};
        case ThreadKind::BlockWorker: return {{kBlock, {}, {}}, kNoRule};
        case ThreadKind::NetWorker: return {{kNet, {}, {}}, kNoRule};
        case ThreadKind::Migration: return {{kMigration, {}, {}}, kKvmIoctl | kUffdIoctl | kThreadPrctl};
        case ThreadKind::Main: return {{kMain, kMigration, kVcpu}, kKvmIoctl | kUffdIoctl | kThreadPrctl};
    }
    return {};
}

std::atomic<Mode> g_mode{Mode::Off};
std::atomic<bool> g_mode_set{false};
// A test-only hook: the kind whose threads make a forbidden call once confined
// (FERRY_TEST_FORBIDDEN_SYSCALL=<kind name>), read once at set_mode.
std::atomic<int> g_test_violation{-1};

thread_local const char* t_kind = "unconfined";

// Appends a decimal number; async-signal-safe.
size_t put_number(char* out, long v) {
    char tmp[24];
    size_t n = 0;
    bool neg = v < 0;
    unsigned long u = neg ? -static_cast<unsigned long>(v) : static_cast<unsigned long>(v);
    do {
        tmp[n++] = static_cast<char>('0' + u % 10);
        u /= 10;
    } while (u);
    size_t w = 0;
    if (neg) out[w++] = '-';
    while (n) out[w++] = tmp[--n];
    return w;
}

void on_sigsys(int, siginfo_t* info, void*) {
    char msg[256];
    size_t n = 0;
    auto put = [&](const char* s) {
        size_t l = std::strlen(s);
        std::memcpy(msg + n, s, l);
        n += l;
    };
    put("ferry: seccomp: a ");
    put(t_kind);
    put(" thread made system call ");
    n += put_number(msg + n, info->si_syscall);
    put(", which its filter forbids; ending ferry (docs/security.md; the seccomp mode log lets it through and logs it)\n");
    (void)::write(STDERR_FILENO, msg, n);
    // A forbidden call made again while SIGSYS is blocked (it is, inside this
    // handler) makes the kernel deliver SIGSYS with its default action: the process
    // ends as killed by SIGSYS, with a core dump where they are enabled.
    ::syscall(SYS_acct, nullptr);
    ::_exit(128 + SIGSYS);
}

struct FilterDeleter {
    void operator()(scmp_filter_ctx c) const { seccomp_release(c); }
};

Result<void> add(scmp_filter_ctx ctx, const char* name) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) return fail(Domain::Config, fmt::format("seccomp: unknown system call '{}'", name));
    if (int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0); rc < 0)
        return fail(Domain::Config, fmt::format("seccomp: cannot allow {}: {}", name, std::strerror(-rc)));
    return {};
}

}  // namespace

std::optional<Mode> parse_mode(std::string_view s) {
    if (s == "on") return Mode::On;
    if (s == "log") return Mode::Log;
    if (s == "off") return Mode::Off;
    return std::nullopt;
}

std::string_view kind_name(ThreadKind k) {
    switch (k) {
        case ThreadKind::Main: return "main";
        case ThreadKind::Vcpu: return "vcpu";
        case ThreadKind::BlockWorker: return "virtio-blk";
        case ThreadKind::NetWorker: return "virtio-net";
        case ThreadKind::Migration: return "migration";
    }
    return "?";
}

bool sanitized_build() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
    return true;
#else
    return false;
#endif
#else
    return false;
#endif
}

void set_mode(Mode m) {
    auto log = logger("seccomp");  // the shared log sink exists before any thread is confined (base/log.cpp)
    if (m == Mode::On && sanitized_build()) {
        log->info("a sanitizer build: the filters log forbidden calls instead of ending ferry");
        m = Mode::Log;
    }
    g_mode = m;
    g_mode_set = true;
    if (const char* hook = std::getenv("FERRY_TEST_FORBIDDEN_SYSCALL")) {
        for (auto k : {ThreadKind::Main, ThreadKind::Vcpu, ThreadKind::BlockWorker, ThreadKind::NetWorker, ThreadKind::Migration})
            if (kind_name(k) == hook) g_test_violation = static_cast<int>(k);
    }
}

std::vector<std::string> allowed_calls(ThreadKind kind) {
    std::vector<std::string> out(std::begin(kCommon), std::end(kCommon));
    KindSpec s = spec(kind);
    for (auto list : s.lists)
        for (const char* name : list)
            if (std::find(out.begin(), out.end(), name) == out.end()) out.emplace_back(name);
    if (s.rules & kKvmIoctl) out.emplace_back("ioctl(KVM)");
    if (s.rules & kUffdIoctl) out.emplace_back("ioctl(UFFD)");
    if (s.rules & kThreadPrctl) out.emplace_back("prctl(PR_SET_NAME|PR_SET_NO_NEW_PRIVS)");
    return out;
}

Result<void> confine_this_thread(ThreadKind kind) {
    if (!g_mode_set || g_mode == Mode::Off) return {};
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa {};
        sa.sa_sigaction = on_sigsys;
        sa.sa_flags = SA_SIGINFO;
        sigemptyset(&sa.sa_mask);
        ::sigaction(SIGSYS, &sa, nullptr);
    });
    std::unique_ptr<void, FilterDeleter> ctx(seccomp_init(g_mode == Mode::On ? SCMP_ACT_TRAP : SCMP_ACT_LOG));
    if (!ctx) return fail(Domain::Config, "seccomp: cannot make a filter");
    for (const std::string& name : allowed_calls(kind)) {
        if (name.find('(') != std::string::npos) continue;  // the argument rules, below
        if (auto ok = add(ctx.get(), name.c_str()); !ok) return ok;
    }
    // ioctl only with the request numbers of its kind: KVM's (type 0xAE) and
    // userfaultfd's (type 0xAA), the type byte being bits 8..15 of the request.
    KindSpec s = spec(kind);
    for (auto [bit, type] : {std::pair{kKvmIoctl, 0xAEu}, std::pair{kUffdIoctl, 0xAAu}}) {
        if (!(s.rules & bit)) continue;
        if (int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1, SCMP_A1(SCMP_CMP_MASKED_EQ, 0xff00u, type << 8)); rc < 0)
            return fail(Domain::Config, fmt::format("seccomp: cannot allow ioctl: {}", std::strerror(-rc)));
    }
    if (s.rules & kThreadPrctl) {
        for (unsigned op : {unsigned{PR_SET_NAME}, unsigned{PR_SET_NO_NEW_PRIVS}})
            if (int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1, SCMP_A0(SCMP_CMP_EQ, op)); rc < 0)
                return fail(Domain::Config, fmt::format("seccomp: cannot allow prctl: {}", std::strerror(-rc)));
    }
    // Named after its kind (ps -L, top -H, the audit log's comm=); the main thread
    // keeps the process's name.
    if (kind != ThreadKind::Main) ::prctl(PR_SET_NAME, std::string(kind_name(kind)).c_str(), 0, 0, 0);
    if (int rc = seccomp_load(ctx.get()); rc < 0)
        return fail(Domain::Config, fmt::format("seccomp: cannot install the {} filter: {}", kind_name(kind), std::strerror(-rc)));
    t_kind = kind_name(kind).data();
    if (g_test_violation == static_cast<int>(kind)) ::syscall(SYS_acct, nullptr);  // test-only: see set_mode
    return {};
}

}  // namespace ferry::seccomp
