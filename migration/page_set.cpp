#include "migration/page_set.hpp"

#include "migration/stream.hpp"

namespace ferry {

PageIndex::PageIndex(const GuestMemory& mem) {
    for (const auto& r : mem.regions()) {
        first_.push_back(total_);
        gpa_.push_back(r.start.raw());
        total_ += r.size() / kPageSize;
    }
}

std::optional<uint64_t> PageIndex::page_of(uint64_t gpa) const {
    for (size_t i = 0; i < first_.size(); ++i) {
        uint64_t n = (i + 1 < first_.size() ? first_[i + 1] : total_) - first_[i];
        if (gpa >= gpa_[i] && (gpa - gpa_[i]) / kPageSize < n) return first_[i] + (gpa - gpa_[i]) / kPageSize;
    }
    return std::nullopt;
}

std::pair<uint32_t, uint64_t> PageIndex::locate(uint64_t page) const {
    size_t i = first_.size() - 1;
    while (i > 0 && first_[i] > page) --i;
    return {static_cast<uint32_t>(i), page - first_[i]};
}

uint64_t PageIndex::gpa_of(uint64_t page) const {
    auto [r, idx] = locate(page);
    return gpa_[r] + idx * kPageSize;
}

uint64_t AtomicBitmap::next_clear(uint64_t from) const {
    while (from < bits_) {
        uint64_t w = ~words_[from / 64].load(std::memory_order_acquire) & (~0ull << (from % 64));
        if (w) {
            uint64_t i = from - from % 64 + static_cast<uint64_t>(__builtin_ctzll(w));
            return i < bits_ ? i : bits_;
        }
        from = from - from % 64 + 64;
    }
    return bits_;
}

void AtomicBitmap::assign(std::span<const uint64_t> words) {
    uint64_t n = 0;
    for (size_t w = 0; w < words_.size(); ++w) {
        uint64_t v = w < words.size() ? words[w] : 0;
        words_[w].store(v, std::memory_order_release);
        n += static_cast<uint64_t>(__builtin_popcountll(v));
    }
    count_.store(n, std::memory_order_relaxed);
}

std::optional<uint64_t> PageCursor::next() {
    uint64_t i = sent_.next_clear(pos_);
    if (i == sent_.size() && pos_ > 0) i = sent_.next_clear(0);
    if (i == sent_.size()) return std::nullopt;
    pos_ = i;
    return i;
}

}  // namespace ferry
