// Strong address types. Gpa (guest-physical), RegionOffset (offset inside one
// guest RAM region) and HostPtr (host-virtual) never convert into each other
// implicitly; arithmetic exists only in checked form and returns std::nullopt on
// overflow.
#pragma once

#include <compare>
#include <cstdint>
#include <optional>

namespace ferry {

template <class Tag>
class Address {
public:
    constexpr Address() = default;
    constexpr explicit Address(uint64_t v) : v_(v) {}
    constexpr uint64_t raw() const { return v_; }

    constexpr std::optional<Address> checked_add(uint64_t n) const {
        uint64_t r;
        if (__builtin_add_overflow(v_, n, &r)) return std::nullopt;
        return Address(r);
    }
    constexpr std::optional<Address> checked_sub(uint64_t n) const {
        if (n > v_) return std::nullopt;
        return Address(v_ - n);
    }
    // Distance from `base` to this address, if this is not below it.
    constexpr std::optional<uint64_t> offset_from(Address base) const {
        if (v_ < base.v_) return std::nullopt;
        return v_ - base.v_;
    }
    constexpr auto operator<=>(const Address&) const = default;

private:
    uint64_t v_ = 0;
};

struct GpaTag {};
struct RegionOffsetTag {};
using Gpa = Address<GpaTag>;
using RegionOffset = Address<RegionOffsetTag>;

class HostPtr {
public:
    constexpr explicit HostPtr(uint8_t* p) : p_(p) {}
    constexpr uint8_t* get() const { return p_; }

private:
    uint8_t* p_;
};

}  // namespace ferry
