#include "cli/messages.hpp"

namespace ferry {

const char* option_name(ConfigItem item) {
    switch (item) {
        case ConfigItem::None: return "";
        case ConfigItem::Disk: return "--disk";
        case ConfigItem::Net: return "--net";
        case ConfigItem::Mem: return "--mem";
        case ConfigItem::Cpus: return "--cpus";
        case ConfigItem::CpuModel: return "--cpu";
        case ConfigItem::NumaNode: return "--numa-node";
        case ConfigItem::Ksm: return "--ksm";
        case ConfigItem::Thp: return "--thp";
        case ConfigItem::TlsCreds: return "--tls-creds";
        case ConfigItem::TlsPsk: return "--tls-psk";
    }
    return "";
}

std::string user_message(const Error& e) { return e.with_subject(option_name(e.item)); }

}  // namespace ferry
