// Least privilege: once `ferry run` has done what needs privileges (open /dev/kvm,
// create a tap with CAP_NET_ADMIN, mbind, bind its sockets), every thread gives up
// every capability it will not need again: effective, permitted, inheritable and
// ambient sets, and the bounding set when it may (CAP_SETPCAP); and it sets
// no_new_privs, so nothing can be regained through exec either. As Firecracker's
// jailer does, but inside ferry.
//
// Capabilities are per thread in Linux. The policy is therefore set first
// (set_policy), before any thread exists; threads started during setup (the virtio
// workers, an incoming migration's receiver) drop at their own start
// (drop_this_thread), and the main thread drops when setup is done, so every thread
// made later inherits the reduced sets.
//
// What may be kept (runtime_needs): nothing, except CAP_SYS_PTRACE for an incoming
// migration when userfaultfd needs it (vm.unprivileged_userfaultfd = 0 and no
// /dev/userfaultfd this uid can open: postcopy opens one when it starts), and only if
// the process has it.
#pragma once

#include <cstdint>
#include <string>

#include "base/error.hpp"

namespace ferry::privileges {

inline constexpr uint64_t cap_bit(int cap) { return uint64_t{1} << cap; }

// The capabilities ferry needs after setup (a mask of cap_bit()s).
uint64_t runtime_needs(bool incoming);
// Records what threads keep; until it is called drop_this_thread() does nothing.
void set_policy(uint64_t keep);
bool policy_set();
// Drops from the calling thread every capability outside the policy. Idempotent.
Result<void> drop_this_thread();
// "CAP_SYS_PTRACE", ... for a mask (for messages and docs), "none" for 0.
std::string names(uint64_t mask);

}  // namespace ferry::privileges
