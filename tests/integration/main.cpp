// KVM integration tests: real guests on /dev/kvm. Without /dev/kvm they are skipped
// with a visible reason and exit status 77 (meson's "skipped").
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cstdio>

#include "process.hpp"

int main(int argc, char** argv) {
    if (!ferry::test::kvm_available()) {
        std::printf("SKIP: /dev/kvm is absent or not accessible: the KVM integration tests need it\n");
        return 77;
    }
    return Catch::Session().run(argc, argv);
}
