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

// Which piece of the user's configuration an error is about. Lower layers take typed
// configuration and never spell an option: they say which item a failure concerns,
// and cli/ names the option that sets it (cli/messages.hpp); elsewhere the noun
// stands in.
enum class ConfigItem { None, Disk, Net, Mem, Cpus, CpuModel, NumaNode, Ksm, Thp, TlsCreds, TlsPsk };

inline const char* config_item_noun(ConfigItem i) {
    switch (i) {
        case ConfigItem::None: return "";
        case ConfigItem::Disk: return "disk";
        case ConfigItem::Net: return "network card";
        case ConfigItem::Mem: return "guest RAM size";
        case ConfigItem::Cpus: return "vCPU count";
        case ConfigItem::CpuModel: return "CPU model";
        case ConfigItem::NumaNode: return "NUMA placement";
        case ConfigItem::Ksm: return "KSM";
        case ConfigItem::Thp: return "THP";
        case ConfigItem::TlsCreds: return "TLS credentials";
        case ConfigItem::TlsPsk: return "TLS pre-shared keys";
    }
    return "";
}

struct Error {
    Domain domain;
    int err = 0;          // errno, 0 when the failure is not a syscall's
    std::string context;  // what was being done, with the values involved
    ConfigItem item = ConfigItem::None;  // the configuration the context is about

    // One line, for the user: "[item ]context: strerror" (cli/ puts the option's
    // name where the item's noun is).
    std::string message() const { return with_subject(config_item_noun(item)); }
    std::string with_subject(const std::string& subject) const {
        std::string s = item == ConfigItem::None || subject.empty() ? context : subject + " " + context;
        if (err == 0) return s;
        return s + ": " + std::strerror(err);
    }
};

template <class T>
using Result = std::expected<T, Error>;

inline std::unexpected<Error> fail(Domain d, std::string context, int err = 0) {
    return std::unexpected<Error>(Error{d, err, std::move(context)});
}

// A configuration error about `item`; `context` follows its name ("'/x.img': not a
// regular file", "64G does not fit...").
inline std::unexpected<Error> fail_config(ConfigItem item, std::string context, int err = 0) {
    return std::unexpected<Error>(Error{Domain::Config, err, std::move(context), item});
}

// For syscalls: captures errno at the call site.
inline std::unexpected<Error> fail_errno(Domain d, std::string context) {
    return fail(d, std::move(context), errno);
}

}  // namespace ferry
