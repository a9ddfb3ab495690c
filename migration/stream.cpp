#include "migration/stream.hpp"

#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <fmt/format.h>

#include "base/state_io.hpp"

namespace ferry {

namespace {
constexpr char kMagic[8] = {'F', 'E', 'R', 'R', 'Y', 'M', 'I', 'G'};
constexpr uint32_t kMaxRegions = 64;
constexpr uint32_t kMaxErrorLen = 4096;

bool known_kind(uint16_t k) {
    return (k >= 1 && k <= 3) || (k >= 5 && k <= 12);
}
}  // namespace

const char* section_name(SectionKind k) {
    switch (k) {
        case SectionKind::Header: return "header";
        case SectionKind::HeaderAck: return "header-ack";
        case SectionKind::RamBatch: return "ram-batch";
        case SectionKind::VcpuState: return "vcpu-state";
        case SectionKind::VmState: return "vm-state";
        case SectionKind::DeviceState: return "device-state";
        case SectionKind::StateEnd: return "state-end";
        case SectionKind::Ready: return "ready";
        case SectionKind::Go: return "go";
        case SectionKind::Resumed: return "resumed";
        case SectionKind::Error: return "error";
    }
    return "?";
}

Result<void> send_section(Channel& ch, SectionKind kind, uint32_t instance, std::span<const std::span<const uint8_t>> pieces) {
    SectionFrame frame{static_cast<uint16_t>(kind), static_cast<uint16_t>(kStreamVersion), instance, 0};
    for (const auto& p : pieces) frame.length += p.size();
    if (frame.length > kMaxSectionPayload) return fail(Domain::Migration, fmt::format("{} section too large", section_name(kind)));
    XXH3_state_t* st = XXH3_createState();
    XXH3_64bits_reset(st);
    XXH3_64bits_update(st, &frame, sizeof(frame));
    for (const auto& p : pieces) XXH3_64bits_update(st, p.data(), p.size());
    uint64_t sum = XXH3_64bits_digest(st);
    XXH3_freeState(st);

    std::vector<iovec> iov;
    iov.reserve(pieces.size() + 2);
    iov.push_back({&frame, sizeof(frame)});
    for (const auto& p : pieces)
        if (!p.empty()) iov.push_back({const_cast<uint8_t*>(p.data()), p.size()});
    iov.push_back({&sum, sizeof(sum)});
    return ch.send_iov(iov.data(), static_cast<int>(iov.size()));
}

Result<void> send_section(Channel& ch, SectionKind kind, uint32_t instance, std::span<const uint8_t> payload) {
    std::span<const uint8_t> pieces[1] = {payload};
    return send_section(ch, kind, instance, pieces);
}

Result<Section> recv_section(Channel& ch) {
    SectionFrame frame{};
    if (auto ok = ch.recv_exact(std::span<uint8_t>(reinterpret_cast<uint8_t*>(&frame), sizeof(frame))); !ok)
        return std::unexpected(ok.error());
    if (!known_kind(frame.kind)) return fail(Domain::Migration, fmt::format("stream: unknown section kind {}", frame.kind));
    auto kind = static_cast<SectionKind>(frame.kind);
    if (frame.version < 1 || frame.version > kStreamVersion)
        return fail(Domain::Migration, fmt::format("stream: {} section version {} (this ferry reads 1..{})", section_name(kind),
                                                   frame.version, kStreamVersion));
    if (frame.length > kMaxSectionPayload)
        return fail(Domain::Migration, fmt::format("stream: {} section claims {} bytes (cap {})", section_name(kind), frame.length,
                                                   kMaxSectionPayload));
    Section s{kind, frame.version, frame.instance, std::vector<uint8_t>(frame.length)};
    if (auto ok = ch.recv_exact(s.payload); !ok) return std::unexpected(ok.error());
    uint64_t sum = 0;
    if (auto ok = ch.recv_exact(std::span<uint8_t>(reinterpret_cast<uint8_t*>(&sum), sizeof(sum))); !ok)
        return std::unexpected(ok.error());
    XXH3_state_t* st = XXH3_createState();
    XXH3_64bits_reset(st);
    XXH3_64bits_update(st, &frame, sizeof(frame));
    XXH3_64bits_update(st, s.payload.data(), s.payload.size());
    uint64_t want = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    if (sum != want) return fail(Domain::Migration, fmt::format("stream: {} section checksum mismatch", section_name(kind)));
    return s;
}

Result<Section> expect_section(Channel& ch, SectionKind kind) {
    auto s = recv_section(ch);
    if (!s) return s;
    if (s->kind == kind) return s;
    if (s->kind == SectionKind::Error) {
        StateReader r(s->payload);
        std::string reason;
        if (!r.get_string(reason, kMaxErrorLen)) reason = "(unreadable reason)";
        return fail(Domain::Migration, "the peer reported: " + reason);
    }
    return fail(Domain::Migration, fmt::format("stream: expected a {} section, got {}", section_name(kind), section_name(s->kind)));
}

Result<void> send_error(Channel& ch, const std::string& reason) {
    StateWriter w;
    w.put_string(reason.substr(0, kMaxErrorLen));
    return send_section(ch, SectionKind::Error, 0, w.bytes());
}

std::vector<uint8_t> encode_header(const StreamHeader& h) {
    StateWriter w;
    w.put(kMagic);
    w.put(h.version);
    w.put(h.page_size);
    w.put(h.cpus);
    w.put(h.tsc_khz);
    w.put(static_cast<uint32_t>(h.ram.size()));
    for (const auto& r : h.ram) {
        w.put(r.start.raw());
        w.put(r.size);
    }
    return w.take();
}

Result<StreamHeader> decode_header(std::span<const uint8_t> payload) {
    StateReader r(payload);
    char magic[8];
    StreamHeader h;
    uint32_t n = 0;
    r.get(magic);
    if (!r.ok() || std::memcmp(magic, kMagic, 8) != 0) return fail(Domain::Migration, "stream: not a ferry migration stream");
    r.get(h.version);
    r.get(h.page_size);
    r.get(h.cpus);
    r.get(h.tsc_khz);
    r.get(n);
    if (!r.ok() || n > kMaxRegions) return fail(Domain::Migration, "stream: malformed header");
    for (uint32_t i = 0; i < n; ++i) {
        uint64_t start = 0, size = 0;
        r.get(start);
        r.get(size);
        h.ram.push_back({Gpa(start), size});
    }
    if (!r.at_end()) return fail(Domain::Migration, "stream: malformed header");
    return h;
}

std::string header_mismatch(const StreamHeader& ours, const StreamHeader& theirs) {
    if (theirs.version != ours.version)
        return fmt::format("stream format version {} (this ferry speaks {})", theirs.version, ours.version);
    if (theirs.page_size != ours.page_size) return fmt::format("page size {} (this ferry uses {})", theirs.page_size, ours.page_size);
    if (theirs.cpus != ours.cpus) return fmt::format("the source guest has {} vCPUs, this one {}", theirs.cpus, ours.cpus);
    if (theirs.ram.size() != ours.ram.size()) return "the RAM layouts differ (check --mem on both sides)";
    for (size_t i = 0; i < ours.ram.size(); ++i) {
        if (theirs.ram[i].start != ours.ram[i].start || theirs.ram[i].size != ours.ram[i].size) {
            uint64_t a = 0, b = 0;
            for (const auto& r : theirs.ram) a += r.size;
            for (const auto& r : ours.ram) b += r.size;
            return fmt::format("the source guest has {} bytes of RAM, this one {} (check --mem on both sides)", a, b);
        }
    }
    if (theirs.tsc_khz && ours.tsc_khz && theirs.tsc_khz != ours.tsc_khz)
        return fmt::format("the source's TSC runs at {} kHz, this host's at {} kHz and KVM here cannot scale it", theirs.tsc_khz,
                           ours.tsc_khz);
    return {};
}

Result<RamBatchStats> apply_ram_batch(const GuestMemory& mem, std::span<const uint8_t> payload) {
    if (payload.size() < 4) return fail(Domain::Migration, "RAM batch: truncated");
    uint32_t count = 0;
    std::memcpy(&count, payload.data(), 4);
    if (count > kMaxBatchPages) return fail(Domain::Migration, fmt::format("RAM batch: {} pages (cap {})", count, kMaxBatchPages));
    uint64_t table_end = 4 + uint64_t{count} * 8;
    if (payload.size() < table_end) return fail(Domain::Migration, "RAM batch: truncated page table");

    // Pass 1: validate everything before touching guest memory.
    std::vector<std::pair<uint8_t*, uint64_t>> dst(count);  // host page, flags
    uint64_t ndata = 0;
    for (uint32_t i = 0; i < count; ++i) {
        uint64_t e = 0;
        std::memcpy(&e, payload.data() + 4 + i * 8, 8);
        uint64_t flags = e & (kPageSize - 1), gpa = e & ~(kPageSize - 1);
        if (flags != kPageFlagZero && flags != kPageFlagData)
            return fail(Domain::Migration, fmt::format("RAM batch: page {:#x} has bad flags {:#x}", gpa, flags));
        auto s = mem.slice(Gpa(gpa), kPageSize);
        if (!s) return fail(Domain::Migration, "RAM batch: " + s.error().message());
        dst[i] = {s->data(), flags};
        if (flags == kPageFlagData) ++ndata;
    }
    if (payload.size() - table_end != ndata * kPageSize)
        return fail(Domain::Migration, fmt::format("RAM batch: {} data bytes for {} data pages", payload.size() - table_end, ndata));

    // Pass 2: write.
    RamBatchStats st;
    const uint8_t* data = payload.data() + table_end;
    static const uint8_t zero[kPageSize] = {};
    for (const auto& [page, flags] : dst) {
        if (flags == kPageFlagData) {
            std::memcpy(page, data, kPageSize);
            data += kPageSize;
            ++st.data;
        } else {
            // Reading a never-touched page maps the shared zero page: cheap.
            if (std::memcmp(page, zero, kPageSize) != 0) std::memset(page, 0, kPageSize);
            ++st.zero;
        }
    }
    return st;
}

}  // namespace ferry
