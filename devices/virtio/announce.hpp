// Self-announcement of a network card (QEMU's announce-self, sent by default after an
// incoming migration): RARP frames (ethertype 0x8035, opcode 3 "reverse request") from
// the card's MAC to the broadcast address, so the switches and bridges between hosts
// learn at once that the guest's MAC now sits behind this host's tap.
//
// Schedule (QEMU's AnnounceParameters, times in ms): the first frame at once, then
// `rounds - 1` more, the k-th gap being min(initial + (k-1) * step, max). QEMU's
// defaults, which ferry uses after a migration: initial 50, max 550, rounds 5, step 100
// (frames at 0, 50, 200, 450, 800 ms).
#pragma once

#include <array>
#include <cstdint>

#include "base/error.hpp"

namespace ferry::virtio {

using MacAddress = std::array<uint8_t, 6>;

struct AnnounceParams {
    uint64_t initial_ms = 50;
    uint64_t max_ms = 550;
    uint64_t rounds = 5;
    uint64_t step_ms = 100;
};
inline constexpr uint64_t kMaxAnnounceRounds = 1000;
inline constexpr uint64_t kMaxAnnounceMs = 100000;

// Rounds in 1..kMaxAnnounceRounds, times at most kMaxAnnounceMs; the error names the field.
Result<void> check_announce(const AnnounceParams& p);

// The gap before frame number `sent` (>= 1: that many were sent already).
uint64_t announce_gap_ms(const AnnounceParams& p, uint64_t sent);

inline constexpr uint16_t kEthTypeRarp = 0x8035;
inline constexpr size_t kRarpFrameSize = 60;  // the Ethernet minimum without FCS
// Ethernet header (broadcast, from mac, 0x8035) + RARP body (hardware Ethernet, protocol
// IPv4, opcode 3, sender and target hardware address = mac, protocol addresses 0),
// zero-padded to 60 bytes.
std::array<uint8_t, kRarpFrameSize> rarp_frame(const MacAddress& mac);

}  // namespace ferry::virtio
