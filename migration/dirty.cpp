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
    for (size_t i = 0; i < regions.size(); ++i) {
        bitmaps[i].assign((regions[i].size() / 4096 + 63) / 64, 0);
        if (auto ok = m_.vm().get_dirty_log(regions[i].slot, bitmaps[i].data()); !ok) return ok;
    }
    m_.take_device_dirty(bitmaps);  // pages written by devices (virtio), which KVM does not see
    return {};
}

Result<void> KvmDirtyLog::clear(size_t region, uint64_t first, uint32_t count, uint64_t* bits) {
    return m_.vm().clear_dirty_log(m_.memory().regions()[region].slot, first, count, bits);
}

void KvmDirtyLog::stop() {
    if (on_) (void)m_.set_dirty_logging(false);
    on_ = false;
}

}  // namespace ferry
