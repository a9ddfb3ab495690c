#include "vmm/cpu_model.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <sstream>

namespace ferry {

namespace {

enum Reg { Eax, Ebx, Ecx, Edx };

struct FeatureWord {
    uint32_t function, index;
    Reg reg;
    uint32_t baseline;     // bits the baseline model keeps
    uint32_t not_feature;  // bits set per guest by the VMM, never compared
};

// The CPUID words that hold feature flags.
constexpr FeatureWord kWords[] = {
    // fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2
    {1, 0, Edx, 0x07ffffff & ~((1u << 10) | (1u << 18) | (1u << 20) | (1u << 21) | (1u << 22)), 1u << 28},
    // sse3 pclmulqdq ssse3 cx16 sse4.1 sse4.2 x2apic popcnt tsc-deadline aes xsave hypervisor
    {1, 0, Ecx, (1u << 0) | (1u << 1) | (1u << 9) | (1u << 13) | (1u << 19) | (1u << 20) | (1u << 21) | (1u << 23) |
                    (1u << 24) | (1u << 25) | (1u << 26) | (1u << 31),
     (1u << 27) | (1u << 31)},
    {7, 0, Ebx, 0, 0},
    {7, 0, Ecx, 0, 0},
    {7, 0, Edx, 0, 0},
    {7, 1, Eax, 0, 0},
    {0xd, 1, Eax, 0, 0},
    {0x80000001, 0, Ecx, 1u << 0, 0},                                        // lahf_lm
    {0x80000001, 0, Edx, (1u << 11) | (1u << 20) | (1u << 27) | (1u << 29), 0},  // syscall nx rdtscp lm
    {0x80000007, 0, Edx, 1u << 8, 0},                                        // invtsc
};

struct NamedFeature {
    const char* name;
    uint32_t function, index;
    Reg reg;
    uint32_t bit;
};

constexpr NamedFeature kFeatures[] = {
    {"pclmulqdq", 1, 0, Ecx, 1},   {"ssse3", 1, 0, Ecx, 9},      {"fma", 1, 0, Ecx, 12},        {"cx16", 1, 0, Ecx, 13},
    {"pcid", 1, 0, Ecx, 17},       {"sse4.1", 1, 0, Ecx, 19},    {"sse4.2", 1, 0, Ecx, 20},     {"x2apic", 1, 0, Ecx, 21},
    {"movbe", 1, 0, Ecx, 22},      {"popcnt", 1, 0, Ecx, 23},    {"tsc-deadline", 1, 0, Ecx, 24}, {"aes", 1, 0, Ecx, 25},
    {"xsave", 1, 0, Ecx, 26},      {"avx", 1, 0, Ecx, 28},       {"f16c", 1, 0, Ecx, 29},       {"rdrand", 1, 0, Ecx, 30},
    {"fsgsbase", 7, 0, Ebx, 0},    {"bmi1", 7, 0, Ebx, 3},       {"hle", 7, 0, Ebx, 4},         {"avx2", 7, 0, Ebx, 5},
    {"smep", 7, 0, Ebx, 7},        {"bmi2", 7, 0, Ebx, 8},       {"erms", 7, 0, Ebx, 9},        {"invpcid", 7, 0, Ebx, 10},
    {"rtm", 7, 0, Ebx, 11},        {"avx512f", 7, 0, Ebx, 16},   {"avx512dq", 7, 0, Ebx, 17},   {"rdseed", 7, 0, Ebx, 18},
    {"adx", 7, 0, Ebx, 19},        {"smap", 7, 0, Ebx, 20},      {"avx512ifma", 7, 0, Ebx, 21}, {"clflushopt", 7, 0, Ebx, 23},
    {"clwb", 7, 0, Ebx, 24},       {"avx512cd", 7, 0, Ebx, 28},  {"sha", 7, 0, Ebx, 29},        {"avx512bw", 7, 0, Ebx, 30},
    {"avx512vl", 7, 0, Ebx, 31},   {"avx512vbmi", 7, 0, Ecx, 1}, {"umip", 7, 0, Ecx, 2},        {"pku", 7, 0, Ecx, 3},
    {"waitpkg", 7, 0, Ecx, 5},     {"avx512vbmi2", 7, 0, Ecx, 6}, {"gfni", 7, 0, Ecx, 8},       {"vaes", 7, 0, Ecx, 9},
    {"vpclmulqdq", 7, 0, Ecx, 10}, {"avx512vnni", 7, 0, Ecx, 11}, {"avx512bitalg", 7, 0, Ecx, 12},
    {"avx512vpopcntdq", 7, 0, Ecx, 14}, {"la57", 7, 0, Ecx, 16}, {"rdpid", 7, 0, Ecx, 22},     {"movdiri", 7, 0, Ecx, 27},
    {"movdir64b", 7, 0, Ecx, 28},  {"serialize", 7, 0, Edx, 14}, {"amx-bf16", 7, 0, Edx, 22},   {"avx512fp16", 7, 0, Edx, 23},
    {"amx-tile", 7, 0, Edx, 24},   {"amx-int8", 7, 0, Edx, 25},  {"avx-vnni", 7, 1, Eax, 4},    {"avx512bf16", 7, 1, Eax, 5},
    {"xsaveopt", 0xd, 1, Eax, 0},  {"xsavec", 0xd, 1, Eax, 1},   {"xsaves", 0xd, 1, Eax, 3},    {"lahf_lm", 0x80000001, 0, Ecx, 0},
    {"abm", 0x80000001, 0, Ecx, 5}, {"sse4a", 0x80000001, 0, Ecx, 6}, {"3dnowprefetch", 0x80000001, 0, Ecx, 8},
    {"pdpe1gb", 0x80000001, 0, Edx, 26}, {"rdtscp", 0x80000001, 0, Edx, 27}, {"invtsc", 0x80000007, 0, Edx, 8},
    {"ss", 1, 0, Edx, 27},         {"tsc-adjust", 7, 0, Ebx, 1}, {"fdp-excptn-only", 7, 0, Ebx, 6},
    {"zero-fcs-fds", 7, 0, Ebx, 13}, {"cldemote", 7, 0, Ecx, 25}, {"fsrm", 7, 0, Edx, 4},      {"md-clear", 7, 0, Edx, 10},
    {"tsx-ldtrk", 7, 0, Edx, 16},  {"spec-ctrl", 7, 0, Edx, 26}, {"stibp", 7, 0, Edx, 27},     {"flush-l1d", 7, 0, Edx, 28},
    {"arch-capabilities", 7, 0, Edx, 29}, {"ssbd", 7, 0, Edx, 31}, {"fzrm", 7, 1, Eax, 10},     {"fsrs", 7, 1, Eax, 11},
    {"fsrc", 7, 1, Eax, 12},
};

uint32_t& reg_of(kvm_cpuid_entry2& e, Reg r) {
    switch (r) {
        case Eax: return e.eax;
        case Ebx: return e.ebx;
        case Ecx: return e.ecx;
        case Edx: return e.edx;
    }
    return e.eax;
}

const char* reg_name(Reg r) {
    static const char* names[] = {"eax", "ebx", "ecx", "edx"};
    return names[r];
}

const NamedFeature* find_feature(const std::string& name) {
    for (const auto& f : kFeatures)
        if (name == f.name) return &f;
    return nullptr;
}

}  // namespace

std::string CpuModel::text() const {
    std::string s = kind == CpuModelKind::Host ? "host" : "baseline";
    for (const auto& d : disabled) s += ",-" + d;
    return s;
}

std::vector<std::string> cpu_feature_names() {
    std::vector<std::string> out;
    for (const auto& f : kFeatures) out.push_back(f.name);
    return out;
}

void apply_cpu_model(CpuidTable& table, const CpuModel& model) {
    if (model.kind == CpuModelKind::Baseline) {
        for (const auto& w : kWords) {
            if (auto* e = table.find(w.function, w.index)) reg_of(*e, w.reg) &= w.baseline;
        }
        // XSAVE: x87 and SSE state only, with the sizes that go with them.
        if (auto* e = table.find(0xd, 0)) {
            e->eax &= 0x3;
            e->edx = 0;
            e->ebx = e->ecx = 576;
        }
        auto& entries = table.entries();
        entries.erase(std::remove_if(entries.begin(), entries.end(),
                                     [](const kvm_cpuid_entry2& e) { return e.function == 0xd && e.index >= 2; }),
                      entries.end());
    }
    for (const auto& name : model.disabled) {
        const NamedFeature* f = find_feature(name);
        if (!f) continue;
        if (auto* e = table.find(f->function, f->index)) reg_of(*e, f->reg) &= ~(1u << f->bit);
    }
}

std::vector<std::string> missing_cpu_features(const CpuidTable& guest, const CpuidTable& offered) {
    std::vector<std::string> out;
    for (const auto& w : kWords) {
        const auto* ge = guest.find(w.function, w.index);
        if (!ge) continue;
        const auto* oe = offered.find(w.function, w.index);
        uint32_t have = oe ? reg_of(const_cast<kvm_cpuid_entry2&>(*oe), w.reg) : 0;
        uint32_t extra = reg_of(const_cast<kvm_cpuid_entry2&>(*ge), w.reg) & ~have & ~w.not_feature;
        for (uint32_t bit = 0; bit < 32; ++bit) {
            if (!(extra & (1u << bit))) continue;
            const char* name = nullptr;
            for (const auto& f : kFeatures)
                if (f.function == w.function && f.index == w.index && f.reg == w.reg && f.bit == bit) name = f.name;
            out.push_back(name ? std::string(name)
                               : fmt::format("leaf {:#x}.{} {} bit {}", w.function, w.index, reg_name(w.reg), bit));
        }
    }
    return out;
}

}  // namespace ferry
