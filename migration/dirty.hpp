// Dirty-page tracking for migration, behind an interface so that KVM's dirty ring
// (or userfaultfd write-protect) can replace the dirty log. Bitmaps hold one bit per
// 4 KiB page of a RAM region, 64 pages a word.
#pragma once

#include <cstdint>
#include <vector>

#include "base/error.hpp"
#include "vmm/machine.hpp"

namespace ferry {

class DirtyTracker {
public:
    virtual ~DirtyTracker() = default;
    // Starts tracking; every page counts as dirty until first cleared.
    virtual Result<void> start() = 0;
    // Fetches the pages dirtied since they were last cleared, per region (a page
    // fetched but never cleared comes again: a round that is not sent loses nothing).
    virtual Result<void> sync(std::vector<std::vector<uint64_t>>& bitmaps) = 0;
    // Re-arms tracking for the set bits of `bits` in pages [first, first+count) of
    // region `region`: call just before reading those pages.
    virtual Result<void> clear(size_t region, uint64_t first, uint32_t count, uint64_t* bits) = 0;
    virtual void stop() = 0;
};

// KVM_GET_DIRTY_LOG / KVM_CLEAR_DIRTY_LOG with MANUAL_DIRTY_LOG_PROTECT2 and
// initially-set bitmaps, plus the pages devices wrote (virtio, which KVM does not
// see). KVM keeps its bits until they are cleared; the device bits taken from the
// Machine are kept here until then too.
class KvmDirtyLog : public DirtyTracker {
public:
    explicit KvmDirtyLog(Machine& m) : m_(m) {}
    ~KvmDirtyLog() override { stop(); }
    Result<void> start() override;
    Result<void> sync(std::vector<std::vector<uint64_t>>& bitmaps) override;
    Result<void> clear(size_t region, uint64_t first, uint32_t count, uint64_t* bits) override;
    void stop() override;

private:
    Machine& m_;
    bool on_ = false;
    std::vector<std::vector<uint64_t>> device_;  // device-written pages fetched, not yet cleared
};

inline uint64_t count_bits(const std::vector<uint64_t>& words) {
    uint64_t n = 0;
    for (uint64_t w : words) n += static_cast<uint64_t>(__builtin_popcountll(w));
    return n;
}

}  // namespace ferry
