// Guest RAM as one sequence of 4 KiB pages (region after region), a bitmap over it,
// and the postcopy source's cursor: it walks the pages not yet sent from where it
// stands, wrapping at the end, and can jump (to the page the destination last
// faulted on) so that the background stream follows the guest's locality.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "memory/guest_memory.hpp"

namespace ferry {

class PageIndex {
public:
    PageIndex() = default;
    explicit PageIndex(const GuestMemory& mem);
    uint64_t total() const { return total_; }
    // Global page number of a guest-physical address inside RAM, or nullopt.
    std::optional<uint64_t> page_of(uint64_t gpa) const;
    uint64_t gpa_of(uint64_t page) const;
    // The region a global page falls in, and the page's index inside it.
    std::pair<uint32_t, uint64_t> locate(uint64_t page) const;
    uint64_t first_page(uint32_t region) const { return first_[region]; }

private:
    std::vector<uint64_t> first_;  // global page number of each region's first page
    std::vector<uint64_t> gpa_;    // each region's start
    uint64_t total_ = 0;
};

// A fixed-size bitmap whose bits are set and read from several threads; it keeps its
// count of set bits as they change (count() is asked per batch on the hot path).
class AtomicBitmap {
public:
    explicit AtomicBitmap(uint64_t bits = 0) : words_((bits + 63) / 64), bits_(bits) {}
    uint64_t size() const { return bits_; }
    bool test(uint64_t i) const { return words_[i / 64].load(std::memory_order_acquire) & bit(i); }
    // Returns the bit's old value.
    bool set(uint64_t i) {
        bool was = words_[i / 64].fetch_or(bit(i), std::memory_order_acq_rel) & bit(i);
        if (!was) count_.fetch_add(1, std::memory_order_relaxed);
        return was;
    }
    bool clear(uint64_t i) {
        bool was = words_[i / 64].fetch_and(~bit(i), std::memory_order_acq_rel) & bit(i);
        if (was) count_.fetch_sub(1, std::memory_order_relaxed);
        return was;
    }
    uint64_t count() const { return count_.load(std::memory_order_relaxed); }
    // The first clear bit at or after `from`, or size() when there is none.
    uint64_t next_clear(uint64_t from) const;
    // The bits 64 at a time (bit i of word w: bit w*64+i), for copying whole.
    size_t words() const { return words_.size(); }
    uint64_t word(size_t w) const { return words_[w].load(std::memory_order_acquire); }
    // Makes this bitmap equal to `words` (words() of them; bits past size() zero).
    void assign(std::span<const uint64_t> words);

private:
    static uint64_t bit(uint64_t i) { return 1ull << (i % 64); }
    std::vector<std::atomic<uint64_t>> words_;
    uint64_t bits_;
    std::atomic<uint64_t> count_{0};
};

class PageCursor {
public:
    explicit PageCursor(const AtomicBitmap& sent) : sent_(sent) {}
    void jump(uint64_t page) { pos_ = page < sent_.size() ? page : 0; }
    // The next page not yet sent, from the cursor on and wrapping once; nullopt when
    // every page is sent. Does not mark it.
    std::optional<uint64_t> next();
    uint64_t position() const { return pos_; }

private:
    const AtomicBitmap& sent_;
    uint64_t pos_ = 0;
};

}  // namespace ferry
