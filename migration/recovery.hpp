// Postcopy recovery's handshake (docs/migration-protocol.md, "Postcopy recovery").
// After a postcopy connection broke, both sides pause; on a new connection the source
// first presents the migration's token (a resume section), and the destination answers
// with the bitmap of the pages it holds (received-bitmap sections, each a slice of
// kBitmapWordsPerSection words, then resume-ack with the page count). The source then
// sends again exactly the pages the destination lacks: whatever was lost in the
// broken connection included.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/error.hpp"
#include "migration/channel.hpp"
#include "migration/page_set.hpp"
#include "migration/stream.hpp"

namespace ferry {

inline constexpr uint64_t kBitmapWordsPerSection = 8192;  // 64 KiB: 2 GiB of guest RAM

Result<void> send_resume(Channel& ch, uint64_t token);
// The token a resume section presents (refuses any other payload length).
Result<uint64_t> resume_token(const Section& s);
// Destination: the pages it holds, then resume-ack.
Result<void> send_received_bitmap(Channel& ch, const AtomicBitmap& received);
// Source: reads what send_received_bitmap sent, for a guest of `pages` pages: the
// bitmap's words. Refuses a page count other than ours, a slice out of place or
// twice, bits past the last page, and anything but these sections.
Result<std::vector<uint64_t>> receive_received_bitmap(Channel& ch, uint64_t pages);

}  // namespace ferry
