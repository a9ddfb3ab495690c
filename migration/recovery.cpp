#include "migration/recovery.hpp"

#include <cstring>
#include <fmt/format.h>

#include "base/state_io.hpp"

namespace ferry {

Result<void> send_resume(Channel& ch, uint64_t token) {
    return send_section(ch, SectionKind::Resume, 0, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&token), sizeof(token)));
}

Result<uint64_t> resume_token(const Section& s) {
    uint64_t token = 0;
    if (s.kind != SectionKind::Resume || s.payload.size() != sizeof(token))
        return fail(Domain::Migration, "recovery: not a resume section");
    std::memcpy(&token, s.payload.data(), sizeof(token));
    return token;
}

Result<void> send_received_bitmap(Channel& ch, const AtomicBitmap& received) {
    std::vector<uint64_t> slice;
    slice.reserve(kBitmapWordsPerSection);
    uint32_t instance = 0;
    for (size_t w = 0; w < received.words(); w += kBitmapWordsPerSection, ++instance) {
        slice.clear();
        for (size_t i = w; i < received.words() && i < w + kBitmapWordsPerSection; ++i) slice.push_back(received.word(i));
        auto bytes = std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(slice.data()), slice.size() * 8);
        if (auto ok = send_section(ch, SectionKind::ReceivedBitmap, instance, bytes); !ok) return ok;
    }
    uint64_t pages = received.size();
    return send_section(ch, SectionKind::ResumeAck, 0, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&pages), sizeof(pages)));
}

Result<std::vector<uint64_t>> receive_received_bitmap(Channel& ch, uint64_t pages) {
    const uint64_t words = (pages + 63) / 64;
    const uint64_t slices = (words + kBitmapWordsPerSection - 1) / kBitmapWordsPerSection;
    std::vector<uint64_t> out(words, 0);
    std::vector<bool> seen(slices, false);
    uint64_t got = 0;
    for (;;) {
        auto s = recv_section(ch);
        if (!s) return std::unexpected(s.error());
        if (s->kind == SectionKind::Error) return fail(Domain::Migration, "the destination refused the recovery: " + error_reason(*s));
        if (s->kind == SectionKind::ResumeAck) {
            uint64_t theirs = 0;
            if (s->payload.size() != sizeof(theirs)) return fail(Domain::Migration, "recovery: malformed resume-ack");
            std::memcpy(&theirs, s->payload.data(), sizeof(theirs));
            if (theirs != pages)
                return fail(Domain::Migration, fmt::format("recovery: the destination's guest has {} pages, ours {}", theirs, pages));
            if (got != slices) return fail(Domain::Migration, fmt::format("recovery: {} of {} bitmap slices came", got, slices));
            return out;
        }
        if (s->kind != SectionKind::ReceivedBitmap)
            return fail(Domain::Migration, fmt::format("recovery: unexpected {} section", section_name(s->kind)));
        uint64_t first = uint64_t{s->instance} * kBitmapWordsPerSection;
        uint64_t n = s->payload.size() / 8;
        bool last = s->instance + 1 == slices;
        if (s->instance >= slices || seen[s->instance] || s->payload.size() % 8 != 0 ||
            n != (last ? words - first : kBitmapWordsPerSection))
            return fail(Domain::Migration, fmt::format("recovery: bitmap slice {} out of place", s->instance));
        seen[s->instance] = true;
        ++got;
        std::memcpy(out.data() + first, s->payload.data(), n * 8);
        if (last && pages % 64 && (out.back() >> (pages % 64)))
            return fail(Domain::Migration, "recovery: the bitmap has pages past the end of guest RAM");
    }
}

}  // namespace ferry
