// A host-wide setting (a /proc or /sys file) changed for one test and put back when
// the test ends, also when it fails.
#pragma once

#include <fstream>
#include <optional>
#include <string>

namespace ferry::test {

inline std::optional<std::string> read_setting(const std::string& path) {
    std::ifstream f(path);
    std::string v;
    if (!f || !std::getline(f, v)) return std::nullopt;
    return v;
}

inline bool write_setting(const std::string& path, const std::string& value) {
    std::ofstream f(path);
    f << value << "\n";
    f.flush();
    return static_cast<bool>(f);
}

class HostSetting {
public:
    explicit HostSetting(std::string path) : path_(std::move(path)), old_(read_setting(path_)) {}
    HostSetting(const HostSetting&) = delete;
    HostSetting& operator=(const HostSetting&) = delete;
    ~HostSetting() {
        if (old_ && changed_) write_setting(path_, *old_);
    }
    bool exists() const { return old_.has_value(); }
    bool set(const std::string& value) {
        changed_ = true;
        return write_setting(path_, value);
    }
    std::optional<std::string> now() const { return read_setting(path_); }

private:
    std::string path_;
    std::optional<std::string> old_;
    bool changed_ = false;
};

}  // namespace ferry::test
