// Typed owners of the KVM fd tree: KvmSystem (/dev/kvm) -> Vm -> Vcpu (+ its
// kvm_run mapping). These classes hold the only ioctl() calls on KVM fds in ferry;
// everything else calls their typed methods.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/fd.hpp"

namespace ferry {

// Owned CPUID table in KVM's variable-length layout.
class CpuidTable {
public:
    explicit CpuidTable(std::vector<kvm_cpuid_entry2> entries) : entries_(std::move(entries)) {}
    std::vector<kvm_cpuid_entry2>& entries() { return entries_; }
    const std::vector<kvm_cpuid_entry2>& entries() const { return entries_; }
    kvm_cpuid_entry2* find(uint32_t function, uint32_t index = 0);
    const kvm_cpuid_entry2* find(uint32_t function, uint32_t index = 0) const {
        return const_cast<CpuidTable*>(this)->find(function, index);
    }

private:
    std::vector<kvm_cpuid_entry2> entries_;
};

class KvmSystem {
public:
    // Opens /dev/kvm (or `path`), checks the API version and the capabilities
    // ferry cannot run without; the error names what is missing.
    static Result<KvmSystem> open(const std::string& path = "/dev/kvm");

    int check_extension(long cap) const;
    Result<CpuidTable> supported_cpuid() const;
    Result<std::vector<uint32_t>> msr_index_list() const;
    size_t vcpu_mmap_size() const { return vcpu_mmap_size_; }
    int fd() const { return fd_.get(); }

private:
    KvmSystem(Fd fd, size_t mmap_size) : fd_(std::move(fd)), vcpu_mmap_size_(mmap_size) {}
    Fd fd_;
    size_t vcpu_mmap_size_;
};

// kvm_run shared page(s) of one vCPU: RAII over the mmap.
class KvmRunMapping {
public:
    KvmRunMapping(kvm_run* run, size_t size) : run_(run), size_(size) {}
    KvmRunMapping(const KvmRunMapping&) = delete;
    KvmRunMapping& operator=(const KvmRunMapping&) = delete;
    KvmRunMapping(KvmRunMapping&& o) noexcept;
    KvmRunMapping& operator=(KvmRunMapping&&) = delete;
    ~KvmRunMapping();
    kvm_run* get() const { return run_; }

private:
    kvm_run* run_;
    size_t size_;
};

class Vcpu {
public:
    uint32_t id() const { return id_; }
    kvm_run* run_struct() const { return run_.get(); }

    // KVM_RUN; returns the errno on failure (EINTR/EAGAIN are normal).
    int run();

    Result<kvm_regs> get_regs() const;
    Result<void> set_regs(const kvm_regs& r);
    Result<kvm_sregs> get_sregs() const;
    Result<void> set_sregs(const kvm_sregs& s);
    Result<kvm_fpu> get_fpu() const;
    Result<void> set_fpu(const kvm_fpu& f);
    Result<void> set_cpuid(const CpuidTable& t);
    // MSRs: reads/writes every index in `entries`; returns how many were handled.
    Result<size_t> get_msrs(std::vector<kvm_msr_entry>& entries) const;
    Result<size_t> set_msrs(const std::vector<kvm_msr_entry>& entries);
    Result<kvm_lapic_state> get_lapic() const;
    Result<void> set_lapic(const kvm_lapic_state& l);
    Result<kvm_mp_state> get_mp_state() const;
    Result<void> set_mp_state(const kvm_mp_state& m);
    Result<void> set_tsc_khz(uint32_t khz);
    Result<uint32_t> get_tsc_khz() const;
    Result<kvm_sregs2> get_sregs2() const;
    Result<void> set_sregs2(const kvm_sregs2& s);
    // XSAVE area of `size` bytes (KVM_CAP_XSAVE2's value, at least 4096).
    Result<std::vector<uint8_t>> get_xsave(size_t size) const;
    Result<void> set_xsave(const std::vector<uint8_t>& area);
    Result<kvm_xcrs> get_xcrs() const;
    Result<void> set_xcrs(const kvm_xcrs& x);
    Result<kvm_vcpu_events> get_vcpu_events() const;
    Result<void> set_vcpu_events(const kvm_vcpu_events& e);
    Result<kvm_debugregs> get_debugregs() const;
    Result<void> set_debugregs(const kvm_debugregs& d);

private:
    friend class Vm;
    Vcpu(uint32_t id, Fd fd, KvmRunMapping run) : id_(id), fd_(std::move(fd)), run_(std::move(run)) {}
    uint32_t id_;
    Fd fd_;
    KvmRunMapping run_;
};

class Vm {
public:
    static Result<Vm> create(const KvmSystem& kvm);

    Result<void> set_user_memory_region(uint32_t slot, uint64_t gpa, uint64_t size, void* host, uint32_t flags = 0);
    Result<void> set_tss_addr(uint64_t addr);
    Result<void> set_identity_map_addr(uint64_t addr);
    Result<void> create_irqchip();
    Result<void> create_pit2();
    Result<void> irq_line(uint32_t irq, bool level);
    // KVM_IRQFD: a write to the eventfd `fd` pulses GSI `gsi` (edge) inside KVM.
    Result<void> irqfd(int fd, uint32_t gsi);
    // KVM_IOEVENTFD: a guest MMIO write of `len` bytes equal to `datamatch` at `addr`
    // signals the eventfd `fd` inside KVM instead of exiting to ferry.
    Result<void> ioeventfd(int fd, uint64_t addr, uint32_t len, uint64_t datamatch);
    Result<std::unique_ptr<Vcpu>> create_vcpu(uint32_t id);
    int check_extension(long cap) const;
    Result<void> enable_cap(uint32_t cap, uint64_t arg0);

    // Dirty log (KVM_MEM_LOG_DIRTY_PAGES on a slot). `bitmap` holds one bit per
    // page of the slot, 64 pages a word.
    Result<void> get_dirty_log(uint32_t slot, uint64_t* bitmap);
    // Clears (and write-protects again) pages [first, first+count) of the slot whose
    // bits are set in `bitmap` (bit 0 = page `first`). first and count must be
    // multiples of 64 unless the range ends at the slot's end.
    Result<void> clear_dirty_log(uint32_t slot, uint64_t first, uint32_t count, uint64_t* bitmap);

    Result<kvm_irqchip> get_irqchip(uint32_t chip_id) const;
    Result<void> set_irqchip(const kvm_irqchip& chip);
    Result<kvm_pit_state2> get_pit2() const;
    Result<void> set_pit2(const kvm_pit_state2& pit);
    Result<kvm_clock_data> get_clock() const;
    Result<void> set_clock(const kvm_clock_data& clock);
    int fd() const { return fd_.get(); }

private:
    Vm(Fd fd, size_t mmap_size) : fd_(std::move(fd)), vcpu_mmap_size_(mmap_size) {}
    Fd fd_;
    size_t vcpu_mmap_size_;
};

}  // namespace ferry
