// StateWriter / StateReader: plain little-endian byte encoding of saved state
// (vCPU, VM, device). The reader is for untrusted input: every read is bounds-checked
// and a failed read leaves the reader failed, so a caller checks once at the end.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace ferry {

class StateWriter {
public:
    template <class T>
    void put(const T& v) {
        static_assert(std::is_trivially_copyable_v<T>);
        const auto* p = reinterpret_cast<const uint8_t*>(&v);
        buf_.insert(buf_.end(), p, p + sizeof(T));
    }
    // A length-prefixed blob (u32 length).
    void put_bytes(std::span<const uint8_t> bytes) {
        put(static_cast<uint32_t>(bytes.size()));
        buf_.insert(buf_.end(), bytes.begin(), bytes.end());
    }
    // A length-prefixed struct: the reader refuses any other size.
    template <class T>
    void put_struct(const T& v) {
        static_assert(std::is_trivially_copyable_v<T>);
        put_bytes(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v), sizeof(T)));
    }
    void put_string(const std::string& s) {
        put_bytes(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
    }
    const std::vector<uint8_t>& bytes() const { return buf_; }
    std::vector<uint8_t> take() { return std::move(buf_); }

private:
    std::vector<uint8_t> buf_;
};

class StateReader {
public:
    explicit StateReader(std::span<const uint8_t> data) : data_(data) {}

    template <class T>
    bool get(T& out) {
        static_assert(std::is_trivially_copyable_v<T>);
        if (!ok_ || data_.size() - pos_ < sizeof(T)) return ok_ = false;
        std::memcpy(&out, data_.data() + pos_, sizeof(T));
        pos_ += sizeof(T);
        return true;
    }
    // A length-prefixed blob of at most `max` bytes.
    bool get_bytes(std::vector<uint8_t>& out, size_t max) {
        uint32_t n = 0;
        if (!get(n)) return false;
        if (n > max || data_.size() - pos_ < n) return ok_ = false;
        out.assign(data_.begin() + static_cast<ptrdiff_t>(pos_), data_.begin() + static_cast<ptrdiff_t>(pos_ + n));
        pos_ += n;
        return true;
    }
    template <class T>
    bool get_struct(T& out) {
        static_assert(std::is_trivially_copyable_v<T>);
        uint32_t n = 0;
        if (!get(n)) return false;
        if (n != sizeof(T)) return ok_ = false;
        return get(out);
    }
    bool get_string(std::string& out, size_t max) {
        std::vector<uint8_t> b;
        if (!get_bytes(b, max)) return false;
        out.assign(b.begin(), b.end());
        return true;
    }
    bool ok() const { return ok_; }
    bool at_end() const { return ok_ && pos_ == data_.size(); }

private:
    std::span<const uint8_t> data_;
    size_t pos_ = 0;
    bool ok_ = true;
};

}  // namespace ferry
