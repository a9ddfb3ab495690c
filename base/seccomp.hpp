// Seccomp filters, one per kind of thread, as Firecracker has them: once a thread is
// set up it confines itself to the system calls its kind needs (confine_this_thread),
// and any other call ends ferry with SIGSYS after a message that names the thread
// kind and the call's number (--seccomp on), or is let through and logged by the
// kernel's audit log (--seccomp log, to find what a list misses).
//
// Filters stack: a thread started by a confined thread keeps its parent's filter and
// adds its own, and only what both allow gets through. The main thread starts the
// vCPU and migration threads after it is confined, so its list holds theirs too
// (base/seccomp.cpp says which calls are there for which kind). The lists and why
// each call is there: docs/security.md.
//
// Until set_mode() is called (only `ferry run` does) confine_this_thread() does
// nothing, so tests that build machines in-process are not confined.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.hpp"

namespace ferry::seccomp {

enum class Mode { On, Log, Off };
enum class ThreadKind { Main, Vcpu, BlockWorker, NetWorker, Migration };

std::optional<Mode> parse_mode(std::string_view s);  // "on", "log", "off"
std::string_view kind_name(ThreadKind k);

// Records the mode for every thread; call before any thread is confined. In a
// sanitizer build (ASan, TSan) On acts as Log: the sanitizer runtimes make calls of
// their own that no list holds (ASan's pipe2), and would be killed for them.
void set_mode(Mode m);
bool sanitized_build();
// Installs the filter of `kind` on the calling thread (after it was set up).
Result<void> confine_this_thread(ThreadKind kind);

// The system calls a kind may make, by name (for docs and tests); ioctl appears
// with its argument rule, e.g. "ioctl(KVM)".
std::vector<std::string> allowed_calls(ThreadKind kind);

}  // namespace ferry::seccomp
