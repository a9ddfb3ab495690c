// KVM integration tests: real guests on /dev/kvm. Without /dev/kvm they are skipped
// with a visible reason and exit status 77 (meson's "skipped"); listing them needs no
// KVM (scripts/test lists them to run them in the nested test VM).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>

#include "process.hpp"

int main(int argc, char** argv) {
    bool listing = false;
    for (int i = 1; i < argc; ++i) listing = listing || std::strncmp(argv[i], "--list", 6) == 0;
    if (!listing && !ferry::test::kvm_available()) {
        std::printf("SKIP: /dev/kvm is absent or not accessible: the KVM integration tests need it\n");
        return 77;
    }
    return Catch::Session().run(argc, argv);
}
