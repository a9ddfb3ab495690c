// The seccomp allow-lists (base/seccomp.cpp): every name is a system call libseccomp
// knows; the lists nest as the filters stack (a vCPU thread may be started by a
// migration thread, which may be started by the main thread: each parent's list holds
// its children's); and docs/security.md shows them as they are.
#include <seccomp.h>

#include <algorithm>
#include <cstdlib>
#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "base/seccomp.hpp"

using ferry::seccomp::ThreadKind;

namespace {

constexpr ThreadKind kKinds[] = {ThreadKind::Main, ThreadKind::Vcpu, ThreadKind::BlockWorker, ThreadKind::NetWorker,
                                 ThreadKind::Migration};

bool holds(ThreadKind parent, ThreadKind child) {
    auto p = ferry::seccomp::allowed_calls(parent), c = ferry::seccomp::allowed_calls(child);
    for (const auto& name : c)
        if (std::find(p.begin(), p.end(), name) == p.end()) {
            UNSCOPED_INFO(ferry::seccomp::kind_name(parent) << " lacks " << name << " of " << ferry::seccomp::kind_name(child));
            return false;
        }
    return true;
}

// The calls in every kind's list, then one Markdown row per kind: how many calls in
// all, and those beyond the shared ones, in the lists' order.
std::string table() {
    std::vector<std::string> shared = ferry::seccomp::allowed_calls(kKinds[0]);
    for (auto k : kKinds) {
        auto calls = ferry::seccomp::allowed_calls(k);
        std::erase_if(shared, [&](const std::string& n) { return std::find(calls.begin(), calls.end(), n) == calls.end(); });
    }
    auto quoted = [](const std::vector<std::string>& v) {
        std::string out;
        for (const auto& n : v) out += (out.empty() ? "`" : ", `") + n + "`";
        return out;
    };
    std::ostringstream out;
    out << "| thread kind | calls in all | allowed |\n|---|---|---|\n";
    out << "| every kind | " << shared.size() << " | " << quoted(shared) << " |\n";
    for (auto k : kKinds) {
        auto calls = ferry::seccomp::allowed_calls(k);
        std::vector<std::string> own;
        for (const auto& n : calls)
            if (std::find(shared.begin(), shared.end(), n) == shared.end()) own.push_back(n);
        out << "| " << ferry::seccomp::kind_name(k) << " | " << calls.size() << " | the shared ones, " << quoted(own) << " |\n";
    }
    return out.str();
}

}  // namespace

TEST_CASE("every allowed name is a system call, with no duplicates", "[seccomp]") {
    for (auto k : kKinds) {
        auto calls = ferry::seccomp::allowed_calls(k);
        for (const auto& name : calls) {
            INFO(ferry::seccomp::kind_name(k) << ": " << name);
            auto base = name.substr(0, name.find('('));
            CHECK(seccomp_syscall_resolve_name(base.c_str()) != __NR_SCMP_ERROR);
            CHECK(std::count(calls.begin(), calls.end(), name) == 1);
        }
    }
}

TEST_CASE("the lists nest as the filters stack", "[seccomp]") {
    CHECK(holds(ThreadKind::Migration, ThreadKind::Vcpu));
    CHECK(holds(ThreadKind::Main, ThreadKind::Migration));
    CHECK(holds(ThreadKind::Main, ThreadKind::Vcpu));
    // Device workers start during setup, before any other thread is confined: they
    // need not nest, and should stay small.
    CHECK(ferry::seccomp::allowed_calls(ThreadKind::BlockWorker).size() < 40);
    CHECK(ferry::seccomp::allowed_calls(ThreadKind::NetWorker).size() < 40);
}

TEST_CASE("seccomp modes parse as --seccomp takes them", "[seccomp]") {
    CHECK(ferry::seccomp::parse_mode("on") == ferry::seccomp::Mode::On);
    CHECK(ferry::seccomp::parse_mode("log") == ferry::seccomp::Mode::Log);
    CHECK(ferry::seccomp::parse_mode("off") == ferry::seccomp::Mode::Off);
    CHECK_FALSE(ferry::seccomp::parse_mode("yes"));
}

TEST_CASE("docs/security.md shows the allow-lists as the code has them", "[seccomp]") {
    std::ifstream in(std::string(SOURCE_ROOT) + "/docs/security.md");
    REQUIRE(in);
    std::stringstream doc;
    doc << in.rdbuf();
    // FERRY_SECCOMP_TABLE_OUT=FILE writes the table there, to paste into the page.
    if (const char* out = std::getenv("FERRY_SECCOMP_TABLE_OUT")) std::ofstream(out) << table();
    INFO("expected in docs/security.md:\n" << table());
    CHECK(doc.str().find(table()) != std::string::npos);
}
