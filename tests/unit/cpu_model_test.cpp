// CPU models: parsing, the baseline mask, and the destination's feature check.
#include <catch2/catch.hpp>

#include "cli/specs.hpp"
#include "migration/stream.hpp"
#include "vmm/cpu_model.hpp"

using namespace ferry;

namespace {
CpuidTable sample_host() {
    std::vector<kvm_cpuid_entry2> e(5);
    e[0].function = 1;
    e[0].ecx = (1u << 28) | (1u << 25) | (1u << 20) | (1u << 31);  // avx aes sse4.2 hypervisor
    e[0].edx = 0x07ffffff;
    e[1].function = 7;
    e[1].flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
    e[1].ebx = (1u << 5) | (1u << 16);  // avx2 avx512f
    e[2].function = 0xd;
    e[2].flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
    e[2].eax = 0xe7;  // x87 sse avx opmask zmm...
    e[2].ebx = e[2].ecx = 2696;
    e[3].function = 0xd;
    e[3].index = 2;
    e[3].flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
    e[3].eax = 256;
    e[4].function = 0x80000001;
    e[4].edx = (1u << 29) | (1u << 26);  // lm pdpe1gb
    return CpuidTable(e);
}
}  // namespace

TEST_CASE("CPU models parse with hidden features", "[cpu]") {
    auto host = parse_cpu_model("host");
    REQUIRE(host);
    CHECK(host->kind == CpuModelKind::Host);
    auto m = parse_cpu_model("baseline,-aes,-x2apic");
    REQUIRE(m);
    CHECK(m->kind == CpuModelKind::Baseline);
    CHECK(m->disabled.size() == 2);
    CHECK(m->text() == "baseline,-aes,-x2apic");
    CHECK_FALSE(parse_cpu_model(""));
    CHECK_FALSE(parse_cpu_model("skylake"));
    CHECK_FALSE(parse_cpu_model("host,+avx"));
    CHECK_FALSE(parse_cpu_model("host,-nonsense"));
}

TEST_CASE("the baseline model hides what not every host has", "[cpu]") {
    auto t = sample_host();
    apply_cpu_model(t, *parse_cpu_model("baseline"));
    CHECK((t.find(1)->ecx & (1u << 28)) == 0);   // avx gone
    CHECK((t.find(1)->ecx & (1u << 25)) != 0);   // aes kept
    CHECK(t.find(7, 0)->ebx == 0);                // avx2, avx512f gone
    CHECK(t.find(0xd, 0)->eax == 0x3);           // x87 + SSE state only
    CHECK(t.find(0xd, 0)->ecx == 576);
    CHECK(t.find(0xd, 2) == nullptr);
    CHECK((t.find(0x80000001)->edx & (1u << 26)) == 0);  // pdpe1gb gone
    CHECK((t.find(0x80000001)->edx & (1u << 29)) != 0);  // lm kept
    auto h = sample_host();
    apply_cpu_model(h, *parse_cpu_model("host,-avx512f"));
    CHECK(h.find(7, 0)->ebx == (1u << 5));
}

TEST_CASE("a destination names the features it cannot offer", "[cpu]") {
    auto host = sample_host();
    auto base = sample_host();
    apply_cpu_model(base, *parse_cpu_model("baseline"));
    auto missing = missing_cpu_features(host, base);
    auto has = [&](const char* n) { return std::find(missing.begin(), missing.end(), n) != missing.end(); };
    CHECK(has("avx"));
    CHECK(has("avx2"));
    CHECK(has("avx512f"));
    CHECK(has("pdpe1gb"));
    CHECK_FALSE(has("aes"));
    CHECK(missing_cpu_features(base, host).empty());
    CHECK(missing_cpu_features(host, host).empty());
    // The hypervisor bit is the VMM's, not a feature.
    auto with_hv = base;
    with_hv.find(1)->ecx |= 1u << 31;
    auto without = base;
    without.find(1)->ecx &= ~(1u << 31);
    CHECK(missing_cpu_features(with_hv, without).empty());
}

TEST_CASE("the stream header carries the guest's CPUID", "[cpu][stream]") {
    StreamHeader h;
    h.cpus = 1;
    h.ram = {{Gpa(0), 64ull << 20}};
    h.cpuid = sample_host().entries();
    auto d = decode_header(encode_header(h));
    REQUIRE(d);
    REQUIRE(d->cpuid.size() == h.cpuid.size());
    CHECK(d->cpuid[1].ebx == h.cpuid[1].ebx);
}
