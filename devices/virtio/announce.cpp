#include "devices/virtio/announce.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace ferry::virtio {

Result<void> check_announce(const AnnounceParams& p) {
    if (p.rounds < 1 || p.rounds > kMaxAnnounceRounds)
        return fail(Domain::Config, fmt::format("announce: rounds {} is out of range (1 to {})", p.rounds, kMaxAnnounceRounds));
    for (auto [name, v] : {std::pair{"initial", p.initial_ms}, {"max", p.max_ms}, {"step", p.step_ms}})
        if (v > kMaxAnnounceMs)
            return fail(Domain::Config, fmt::format("announce: {} {} ms is out of range (0 to {})", name, v, kMaxAnnounceMs));
    return {};
}

uint64_t announce_gap_ms(const AnnounceParams& p, uint64_t sent) {
    if (sent == 0) return 0;
    return std::min(p.initial_ms + (sent - 1) * p.step_ms, p.max_ms);  // bounded: check_announce
}

std::array<uint8_t, kRarpFrameSize> rarp_frame(const MacAddress& mac) {
    std::array<uint8_t, kRarpFrameSize> f{};
    auto put16 = [&](size_t at, uint16_t v) {
        f[at] = static_cast<uint8_t>(v >> 8);
        f[at + 1] = static_cast<uint8_t>(v);
    };
    std::fill_n(f.begin(), 6, 0xff);                 // destination: broadcast
    std::copy(mac.begin(), mac.end(), f.begin() + 6);  // source
    put16(12, kEthTypeRarp);
    put16(14, 1);       // hardware type: Ethernet
    put16(16, 0x0800);  // protocol type: IPv4
    f[18] = 6;          // hardware address length
    f[19] = 4;          // protocol address length
    put16(20, 3);       // opcode: reverse request
    std::copy(mac.begin(), mac.end(), f.begin() + 22);  // sender hardware address; 28..31: 0.0.0.0
    std::copy(mac.begin(), mac.end(), f.begin() + 32);  // target hardware address; 38..41: 0.0.0.0
    return f;                                          // 42..59: padding
}

}  // namespace ferry::virtio
