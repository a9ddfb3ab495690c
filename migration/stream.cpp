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
    return (k >= 1 && k <= 3) || (k >= 5 && k <= 14);
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
        case SectionKind::Sync: return "sync";
        case SectionKind::SyncAck: return "sync-ack";
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

namespace {

Result<SectionFrame> recv_frame(Channel& ch) {
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
    return frame;
}

// Reads the trailing checksum and compares it with the digest of what came.
Result<void> check_sum(Channel& ch, XXH3_state_t* st, SectionKind kind) {
    uint64_t sum = 0;
    if (auto ok = ch.recv_exact(std::span<uint8_t>(reinterpret_cast<uint8_t*>(&sum), sizeof(sum))); !ok) return ok;
    if (sum != XXH3_64bits_digest(st)) return fail(Domain::Migration, fmt::format("stream: {} section checksum mismatch", section_name(kind)));
    return {};
}

struct Xxh3 {
    XXH3_state_t* st = XXH3_createState();
    Xxh3() { XXH3_64bits_reset(st); }
    ~Xxh3() { XXH3_freeState(st); }
    void update(const void* p, size_t n) { XXH3_64bits_update(st, p, n); }
};

// Checks a RAM batch's page table against guest RAM; fills `pages` with each entry's
// host page. Returns how many entries carry data.
Result<uint32_t> validate_ram_table(const GuestMemory& mem, const uint64_t* entries, uint32_t count, uint8_t** pages) {
    uint32_t ndata = 0;
    for (uint32_t i = 0; i < count; ++i) {
        uint64_t flags = entries[i] & (kPageSize - 1), gpa = entries[i] & ~(kPageSize - 1);
        if (flags != kPageFlagZero && flags != kPageFlagData)
            return fail(Domain::Migration, fmt::format("RAM batch: page {:#x} has bad flags {:#x}", gpa, flags));
        auto s = mem.slice(Gpa(gpa), kPageSize);
        if (!s) return fail(Domain::Migration, "RAM batch: " + s.error().message());
        pages[i] = s->data();
        if (flags == kPageFlagData) ++ndata;
    }
    return ndata;
}

// Zero entries: clear the page unless it reads as zero already (a never-touched page
// maps the shared zero page: cheap). Returns the batch's figures.
RamBatchStats apply_zero_entries(const uint64_t* entries, uint32_t count, uint8_t* const* pages) {
    RamBatchStats st;
    static const uint8_t zero[kPageSize] = {};
    for (uint32_t i = 0; i < count; ++i) {
        if ((entries[i] & (kPageSize - 1)) == kPageFlagData) {
            ++st.data;
        } else {
            if (std::memcmp(pages[i], zero, kPageSize) != 0) std::memset(pages[i], 0, kPageSize);
            ++st.zero;
        }
    }
    return st;
}

Result<void> recv_payload(Channel& ch, const SectionFrame& frame, Section& s) {
    s.kind = static_cast<SectionKind>(frame.kind);
    s.version = frame.version;
    s.instance = frame.instance;
    s.payload.resize(frame.length);
    if (auto ok = ch.recv_exact(s.payload); !ok) return ok;
    Xxh3 h;
    h.update(&frame, sizeof(frame));
    h.update(s.payload.data(), s.payload.size());
    return check_sum(ch, h.st, s.kind);
}

}  // namespace

Result<void> recv_section_into(Channel& ch, Section& s) {
    auto frame = recv_frame(ch);
    if (!frame) return std::unexpected(frame.error());
    return recv_payload(ch, *frame, s);
}

Result<std::optional<RamBatchStats>> recv_section_or_ram(Channel& ch, const GuestMemory& mem, Section& other) {
    auto frame = recv_frame(ch);
    if (!frame) return std::unexpected(frame.error());
    if (frame->kind != static_cast<uint16_t>(SectionKind::RamBatch)) {
        if (auto ok = recv_payload(ch, *frame, other); !ok) return std::unexpected(ok.error());
        return std::optional<RamBatchStats>();
    }
    // The page table first, validated whole.
    if (frame->length < 4) return fail(Domain::Migration, "RAM batch: truncated");
    uint32_t count = 0;
    if (auto ok = ch.recv_exact(std::span<uint8_t>(reinterpret_cast<uint8_t*>(&count), 4)); !ok) return std::unexpected(ok.error());
    if (count > kMaxBatchPages) return fail(Domain::Migration, fmt::format("RAM batch: {} pages (cap {})", count, kMaxBatchPages));
    uint64_t table_end = 4 + uint64_t{count} * 8;
    if (frame->length < table_end) return fail(Domain::Migration, "RAM batch: truncated page table");
    uint64_t entries[kMaxBatchPages];
    if (auto ok = ch.recv_exact(std::span<uint8_t>(reinterpret_cast<uint8_t*>(entries), count * 8)); !ok)
        return std::unexpected(ok.error());
    uint8_t* pages[kMaxBatchPages];
    auto ndata = validate_ram_table(mem, entries, count, pages);
    if (!ndata) return std::unexpected(ndata.error());
    iovec iov[kMaxBatchPages];
    uint32_t n = 0;
    for (uint32_t i = 0; i < count; ++i)
        if ((entries[i] & (kPageSize - 1)) == kPageFlagData) iov[n++] = {pages[i], kPageSize};
    if (frame->length - table_end != uint64_t{*ndata} * kPageSize)
        return fail(Domain::Migration, fmt::format("RAM batch: {} data bytes for {} data pages", frame->length - table_end, *ndata));
    // Then the data, straight into guest RAM (nothing runs there yet).
    iovec work[kMaxBatchPages];
    std::copy(iov, iov + n, work);
    if (auto ok = ch.recv_iov(work, static_cast<int>(n)); !ok) return std::unexpected(ok.error());
    Xxh3 h;
    h.update(&*frame, sizeof(SectionFrame));
    h.update(&count, 4);
    h.update(entries, count * 8);
    for (uint32_t i = 0; i < n; ++i) h.update(iov[i].iov_base, kPageSize);
    if (auto ok = check_sum(ch, h.st, SectionKind::RamBatch); !ok) return std::unexpected(ok.error());
    return std::optional<RamBatchStats>(apply_zero_entries(entries, count, pages));
}

Result<Section> recv_section(Channel& ch) {
    Section s{};
    if (auto ok = recv_section_into(ch, s); !ok) return std::unexpected(ok.error());
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
    w.put(static_cast<uint32_t>(h.cpuid.size()));
    for (const auto& e : h.cpuid) w.put(e);
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
    uint32_t ncpuid = 0;
    if (!r.get(ncpuid) || ncpuid > 256) return fail(Domain::Migration, "stream: malformed header (CPUID)");
    h.cpuid.resize(ncpuid);
    for (auto& e : h.cpuid) r.get(e);
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
    uint64_t entries[kMaxBatchPages];
    std::memcpy(entries, payload.data() + 4, count * 8);
    // Validate everything before touching guest memory, then write.
    uint8_t* pages[kMaxBatchPages];
    auto ndata = validate_ram_table(mem, entries, count, pages);
    if (!ndata) return std::unexpected(ndata.error());
    if (payload.size() - table_end != uint64_t{*ndata} * kPageSize)
        return fail(Domain::Migration, fmt::format("RAM batch: {} data bytes for {} data pages", payload.size() - table_end, *ndata));
    const uint8_t* data = payload.data() + table_end;
    for (uint32_t i = 0; i < count; ++i) {
        if ((entries[i] & (kPageSize - 1)) != kPageFlagData) continue;
        std::memcpy(pages[i], data, kPageSize);
        data += kPageSize;
    }
    return apply_zero_entries(entries, count, pages);
}

}  // namespace ferry
