#include "migration/dirty.hpp"

namespace ferry {

Result<void> KvmDirtyLog::start() {
    if (auto ok = m_.set_dirty_logging(true); !ok) return ok;
    on_ = true;
    return {};
}

Result<void> KvmDirtyLog::sync(std::vector<std::vector<uint64_t>>& bitmaps) {
    const auto& regions = m_.memory().regions();
    bitmaps.resize(regions.size());
    device_.resize(regions.size());
    for (size_t i = 0; i < regions.size(); ++i) {
        bitmaps[i].assign((regions[i].size() / 4096 + 63) / 64, 0);
        device_[i].resize(bitmaps[i].size(), 0);
        if (auto ok = m_.vm().get_dirty_log(regions[i].slot, bitmaps[i].data()); !ok) return ok;
    }
    // The Machine forgets the device bits it hands over: keep them until cleared, as
    // KVM does its own (a sync whose round is not sent, the one before the stop,
    // must not lose them: the used ring the device wrote last would stay stale).
    m_.take_device_dirty(device_);
    for (size_t i = 0; i < regions.size(); ++i)
        for (size_t w = 0; w < bitmaps[i].size(); ++w) bitmaps[i][w] |= device_[i][w];
    return {};
}

Result<void> KvmDirtyLog::clear(size_t region, uint64_t first, uint32_t count, uint64_t* bits) {
    if (region < device_.size()) {
        auto& dev = device_[region];
        for (uint64_t w = 0; w < (count + 63) / 64 && first / 64 + w < dev.size(); ++w) dev[first / 64 + w] &= ~bits[w];
    }
    return m_.vm().clear_dirty_log(m_.memory().regions()[region].slot, first, count, bits);
}

void KvmDirtyLog::stop() {
    if (on_) (void)m_.set_dirty_logging(false);
    on_ = false;
}

}  // namespace ferry
