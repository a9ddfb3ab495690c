// Error type used across ferry: std::expected<T, Error> on every fallible path.
// Error carries a domain, an errno (0 when none) and a context string (gpa, len,
// section, file...). Guest- and peer-driven paths return these; they never throw.
#pragma once

#include <cerrno>
#include <cstring>
#include <expected>
#include <string>
#include <utility>

namespace ferry {

enum class Domain { Kvm, Memory, Loader, Device, Config, Io, Migration, Monitor };

inline const char* domain_name(Domain d) {
    switch (d) {
        case Domain::Kvm: return "kvm";
        case Domain::Memory: return "memory";
        case Domain::Loader: return "loader";
        case Domain::Device: return "device";
        case Domain::Config: return "config";
        case Domain::Io: return "io";
        case Domain::Migration: return "migration";
        case Domain::Monitor: return "monitor";
    }
    return "?";
}

struct Error {
    Domain domain;
    int err = 0;          // errno, 0 when the failure is not a syscall's
    std::string context;  // what was being done, with the values involved

    // One line, for the user: "context: strerror".
    std::string message() const {
        if (err == 0) return context;
        return context + ": " + std::strerror(err);
    }
};

template <class T>
using Result = std::expected<T, Error>;

inline std::unexpected<Error> fail(Domain d, std::string context, int err = 0) {
    return std::unexpected<Error>(Error{d, err, std::move(context)});
}

// For syscalls: captures errno at the call site.
inline std::unexpected<Error> fail_errno(Domain d, std::string context) {
    return fail(d, std::move(context), errno);
}

}  // namespace ferry
