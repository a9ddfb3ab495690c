// Options only in cli/: no string below cli/ spells a command-line option. Lower layers
// say which configuration item a failure is about (base/error.hpp ConfigItem) and cli/
// names the option (cli/messages.hpp).
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#include "base/error.hpp"
#include "cli/messages.hpp"

using namespace ferry;

TEST_CASE("layering: no option name in a string literal outside cli/", "[layering]") {
    namespace fs = std::filesystem;
    const std::regex option(R"re("[^"]*--[a-z][a-z-]*[^"]*")re");
    int files = 0;
    for (const char* dir : {"base", "devices", "memory", "vmm", "migration", "monitor"}) {
        for (const auto& e : fs::recursive_directory_iterator(fs::path(SOURCE_ROOT) / dir)) {
            auto ext = e.path().extension();
            if (ext != ".cpp" && ext != ".hpp") continue;
            ++files;
            std::ifstream in(e.path());
            std::string line;
            for (int n = 1; std::getline(in, line); ++n) {
                auto first = line.find_first_not_of(" \t");
                if (first != std::string::npos && line.compare(first, 2, "//") == 0) continue;  // a comment
                std::smatch m;
                INFO(e.path().string() << ":" << n << ": " << line);
                CHECK_FALSE(std::regex_search(line, m, option));
            }
        }
    }
    CHECK(files > 50);
}

TEST_CASE("layering: cli/ names the option a configuration error is about", "[layering]") {
    auto e = fail_config(ConfigItem::Disk, "'/x.img': not a regular file or block device").error();
    CHECK(e.message() == "disk '/x.img': not a regular file or block device");
    CHECK(user_message(e) == "--disk '/x.img': not a regular file or block device");
    auto t = fail_config(ConfigItem::TlsPsk, "/k.psk", ENOENT).error();
    CHECK(user_message(t) == std::string("--tls-psk /k.psk: ") + std::strerror(ENOENT));
    auto plain = fail(Domain::Kvm, "KVM_RUN").error();
    CHECK(user_message(plain) == "KVM_RUN");
    for (auto item : {ConfigItem::Disk, ConfigItem::Net, ConfigItem::Mem, ConfigItem::Cpus, ConfigItem::CpuModel, ConfigItem::NumaNode,
                      ConfigItem::Ksm, ConfigItem::Thp, ConfigItem::TlsCreds, ConfigItem::TlsPsk}) {
        CHECK(std::string(option_name(item)).starts_with("--"));
        CHECK(std::string(config_item_noun(item)).size() > 0);
    }
}
