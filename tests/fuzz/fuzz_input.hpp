// FuzzInput: a cursor over a fuzzer's input bytes for the targets in tests/fuzz/.
// Reads past the end yield zeros (or a short span), so a target never has to check
// the input's length and every input, however short, is a valid test case.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>

namespace ferry::fuzz {

class FuzzInput {
public:
    FuzzInput(const uint8_t* data, size_t size) : data_(data, size) {}

    // The next sizeof(T) bytes as a T (zero-filled past the end).
    template <class T>
    T take() {
        static_assert(std::is_trivially_copyable_v<T>);
        T v{};
        auto b = take_bytes(sizeof(T));
        if (!b.empty()) std::memcpy(&v, b.data(), b.size());
        return v;
    }
    // Up to n bytes (fewer at the end).
    std::span<const uint8_t> take_bytes(size_t n) {
        n = std::min(n, data_.size() - pos_);
        auto s = data_.subspan(pos_, n);
        pos_ += n;
        return s;
    }
    std::span<const uint8_t> rest() { return take_bytes(data_.size() - pos_); }
    size_t left() const { return data_.size() - pos_; }

private:
    std::span<const uint8_t> data_;
    size_t pos_ = 0;
};

}  // namespace ferry::fuzz
