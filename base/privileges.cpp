#include "base/privileges.hpp"

#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <fstream>

#include <fmt/format.h>

namespace ferry::privileges {

namespace {

std::atomic<bool> g_set{false};
std::atomic<uint64_t> g_keep{0};

struct Sets {
    uint64_t effective = 0, permitted = 0, inheritable = 0;
};

Result<Sets> get_sets() {
    __user_cap_header_struct h{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct d[2]{};
    if (::syscall(SYS_capget, &h, d) != 0) return fail_errno(Domain::Config, "capget");
    auto join = [&](uint32_t __user_cap_data_struct::*f) { return uint64_t{d[0].*f} | uint64_t{d[1].*f} << 32; };
    return Sets{join(&__user_cap_data_struct::effective), join(&__user_cap_data_struct::permitted),
                join(&__user_cap_data_struct::inheritable)};
}

Result<void> set_sets(const Sets& s) {
    __user_cap_header_struct h{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct d[2]{};
    for (int i = 0; i < 2; ++i) {
        d[i].effective = static_cast<uint32_t>(s.effective >> (32 * i));
        d[i].permitted = static_cast<uint32_t>(s.permitted >> (32 * i));
        d[i].inheritable = static_cast<uint32_t>(s.inheritable >> (32 * i));
    }
    if (::syscall(SYS_capset, &h, d) != 0) return fail_errno(Domain::Config, "capset");
    return {};
}

// Whether this uid can open /dev/userfaultfd read-write by its mode alone (no
// CAP_DAC_OVERRIDE: that goes with the drop).
bool dev_userfaultfd_usable() {
    struct stat st {};
    if (::stat("/dev/userfaultfd", &st) != 0 || !S_ISCHR(st.st_mode)) return false;
    if (st.st_uid == ::geteuid()) return (st.st_mode & 0600) == 0600;
    gid_t groups[256];
    int n = ::getgroups(256, groups);
    bool in_group = st.st_gid == ::getegid();
    for (int i = 0; i < n && !in_group; ++i) in_group = groups[i] == st.st_gid;
    if (in_group) return (st.st_mode & 0060) == 0060;
    return (st.st_mode & 0006) == 0006;
}

}  // namespace

uint64_t runtime_needs(bool incoming) {
    if (!incoming) return 0;
    int unprivileged = 0;
    std::ifstream("/proc/sys/vm/unprivileged_userfaultfd") >> unprivileged;
    if (unprivileged == 1 || dev_userfaultfd_usable()) return 0;
    return cap_bit(CAP_SYS_PTRACE);
}

void set_policy(uint64_t keep) {
    g_keep = keep;
    g_set = true;
}

bool policy_set() { return g_set; }

Result<void> drop_this_thread() {
    if (!g_set) return {};
    auto now = get_sets();
    if (!now) return std::unexpected(now.error());
    const uint64_t keep = g_keep.load() & now->permitted;
    // No exec can ever raise privileges again (setuid binaries, file capabilities):
    // what keeps a thread that may not shrink its bounding set (no CAP_SETPCAP)
    // from regaining anything. Then ambient (it must stay a subset of permitted and
    // inheritable), the bounding set while CAP_SETPCAP is still effective, and the
    // three sets.
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return fail_errno(Domain::Config, "prctl(PR_SET_NO_NEW_PRIVS)");
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
        return fail_errno(Domain::Config, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)");
    if (now->effective & cap_bit(CAP_SETPCAP)) {
        for (int cap = 0; cap <= CAP_LAST_CAP; ++cap) {
            if (keep & cap_bit(cap)) continue;
            if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL)
                return fail_errno(Domain::Config, fmt::format("prctl(PR_CAPBSET_DROP, {})", cap));
        }
    }
    if (now->effective == keep && now->permitted == keep && now->inheritable == 0) return {};
    return set_sets(Sets{keep, keep, 0});
}

std::string names(uint64_t mask) {
    static const char* const known[] = {
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
        "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN",
        "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
        "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
        "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND",
        "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"};
    std::string out;
    for (int cap = 0; cap < 64; ++cap) {
        if (!(mask & cap_bit(cap))) continue;
        if (!out.empty()) out += ',';
        out += cap < static_cast<int>(std::size(known)) ? known[cap] : fmt::format("cap{}", cap);
    }
    return out.empty() ? "none" : out;
}

}  // namespace ferry::privileges
