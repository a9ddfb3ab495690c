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
    return (k >= 1 && k <= 3) || (k >= 5 && k <= 23);
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
        case SectionKind::Discard: return "discard";
        case SectionKind::PageRequest: return "page-request";
        case SectionKind::PostcopyDone: return "postcopy-done";
        case SectionKind::UrgentHello: return "urgent-hello";
        case SectionKind::BootInfo: return "boot-info";
        case SectionKind::BootImage: return "boot-image";
        case SectionKind::Resume: return "resume";
        case SectionKind::ReceivedBitmap: return "received-bitmap";
        case SectionKind::ResumeAck: return "resume-ack";
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

Result<Section> recv_section(Channel& ch) {
    Section s{};
    if (auto ok = recv_section_into(ch, s); !ok) return std::unexpected(ok.error());
    return s;
}

Result<Section> expect_section(Channel& ch, SectionKind kind) {
    auto s = recv_section(ch);
    if (!s) return s;
    if (s->kind == kind) return s;
    if (s->kind == SectionKind::Error) return fail(Domain::Migration, "the peer reported: " + error_reason(*s));
    return fail(Domain::Migration, fmt::format("stream: expected a {} section, got {}", section_name(kind), section_name(s->kind)));
}

std::string error_reason(const Section& s) {
    StateReader r(s.payload);
    std::string reason;
    if (!r.get_string(reason, kMaxErrorLen)) reason = "(unreadable reason)";
    return reason;
}

Result<void> send_error(Channel& ch, const std::string& reason, uint32_t instance, std::chrono::milliseconds timeout) {
    StateWriter w;
    w.put_string(reason.substr(0, kMaxErrorLen));
    (void)ch.set_send_timeout(timeout);
    return send_section(ch, SectionKind::Error, instance, w.bytes());
}

std::vector<uint8_t> encode_header(const StreamHeader& h) {
    StateWriter w;
    w.put(kMagic);
    w.put(h.version);
    w.put(h.page_size);
    w.put(h.cpus);
    w.put(h.tsc_khz);
    if (h.version >= 3) w.put(h.caps);
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
    if (h.version >= 3) r.get(h.caps);
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
    if (theirs.ram.size() != ours.ram.size()) return "the RAM layouts differ (check the guest RAM size on both sides)";
    for (size_t i = 0; i < ours.ram.size(); ++i) {
        if (theirs.ram[i].start != ours.ram[i].start || theirs.ram[i].size != ours.ram[i].size) {
            uint64_t a = 0, b = 0;
            for (const auto& r : theirs.ram) a += r.size;
            for (const auto& r : ours.ram) b += r.size;
            return fmt::format("the source guest has {} bytes of RAM, this one {} (check the guest RAM size on both sides)", a, b);
        }
    }
    if (theirs.tsc_khz && ours.tsc_khz && theirs.tsc_khz != ours.tsc_khz)
        return fmt::format("the source's TSC runs at {} kHz, this host's at {} kHz and KVM here cannot scale it", theirs.tsc_khz,
                           ours.tsc_khz);
    return {};
}

namespace {
// The region holding [gpa, gpa + len), or -1.
int region_of(const GuestMemory& mem, uint64_t gpa, uint64_t len) {
    const auto& regions = mem.regions();
    for (size_t i = 0; i < regions.size(); ++i) {
        uint64_t start = regions[i].start.raw();
        if (gpa >= start && gpa - start < regions[i].size() && len <= regions[i].size() - (gpa - start)) return static_cast<int>(i);
    }
    return -1;
}
}  // namespace

Result<RamBatchStats> decode_ram_batch(const GuestMemory& mem, std::span<const uint8_t> payload, std::vector<DecodedPage>& out) {
    out.clear();
    if (payload.size() < 4) return fail(Domain::Migration, "RAM batch: truncated");
    uint32_t count = 0;
    std::memcpy(&count, payload.data(), 4);
    if (count > kMaxBatchPages) return fail(Domain::Migration, fmt::format("RAM batch: {} pages (cap {})", count, kMaxBatchPages));
    uint64_t table_end = 4 + uint64_t{count} * 8;
    if (payload.size() < table_end) return fail(Domain::Migration, "RAM batch: truncated page table");
    RamBatchStats st;
    for (uint32_t i = 0; i < count; ++i) {
        uint64_t e = 0;
        std::memcpy(&e, payload.data() + 4 + size_t{i} * 8, 8);
        uint64_t flags = e & (kPageSize - 1), gpa = e & ~(kPageSize - 1);
        if (flags != kPageFlagZero && flags != kPageFlagData)
            return fail(Domain::Migration, fmt::format("RAM batch: page {:#x} has bad flags {:#x}", gpa, flags));
        int r = region_of(mem, gpa, kPageSize);
        if (r < 0) return fail(Domain::Migration, fmt::format("RAM batch: page {:#x} is outside guest RAM", gpa));
        const auto& region = mem.regions()[static_cast<size_t>(r)];
        uint64_t off = gpa - region.start.raw();
        out.push_back({gpa, static_cast<uint32_t>(r), off / kPageSize, region.map.addr() + off, nullptr});
        if (flags == kPageFlagData) ++st.data;
        else ++st.zero;
    }
    if (payload.size() - table_end != st.data * kPageSize)
        return fail(Domain::Migration, fmt::format("RAM batch: {} data bytes for {} data pages", payload.size() - table_end, st.data));
    const uint8_t* data = payload.data() + table_end;
    for (uint32_t i = 0; i < count; ++i) {
        uint64_t e = 0;
        std::memcpy(&e, payload.data() + 4 + size_t{i} * 8, 8);
        if ((e & (kPageSize - 1)) != kPageFlagData) continue;
        out[i].data = data;
        data += kPageSize;
    }
    return st;
}

Result<void> DirectPlacer::place(const DecodedPage& p) {
    if (p.data) {
        std::memcpy(p.host, p.data, kPageSize);
        return {};
    }
    static const uint8_t zero[kPageSize] = {};
    if (std::memcmp(p.host, zero, kPageSize) != 0) std::memset(p.host, 0, kPageSize);
    return {};
}

Result<RamBatchStats> place_ram_batch(const GuestMemory& mem, std::span<const uint8_t> payload, PagePlacer& placer,
                                      std::vector<DecodedPage>& scratch) {
    auto st = decode_ram_batch(mem, payload, scratch);
    if (!st) return st;
    for (const auto& p : scratch)
        if (auto ok = placer.place(p); !ok) return std::unexpected(ok.error());
    if (auto ok = placer.end_batch(); !ok) return std::unexpected(ok.error());
    return st;
}

Result<RamBatchStats> apply_ram_batch(const GuestMemory& mem, std::span<const uint8_t> payload) {
    DirectPlacer direct;
    std::vector<DecodedPage> scratch;
    return place_ram_batch(mem, payload, direct, scratch);
}

std::vector<uint8_t> encode_page_runs(std::span<const PageRun> runs) {
    StateWriter w;
    w.put(static_cast<uint32_t>(runs.size()));
    for (const auto& r : runs) {
        w.put(r.gpa);
        w.put(r.pages);
    }
    return w.take();
}

Result<std::vector<PageRun>> decode_page_runs(const GuestMemory& mem, std::span<const uint8_t> payload) {
    StateReader r(payload);
    uint32_t n = 0;
    if (!r.get(n) || n > kMaxRunsPerSection || payload.size() != 4 + uint64_t{n} * 12)
        return fail(Domain::Migration, "page list: malformed");
    std::vector<PageRun> runs(n);
    for (auto& run : runs) {
        r.get(run.gpa);
        r.get(run.pages);
        if (run.pages == 0 || run.gpa % kPageSize || region_of(mem, run.gpa, uint64_t{run.pages} * kPageSize) < 0)
            return fail(Domain::Migration, fmt::format("page list: {} page(s) at {:#x} are not inside guest RAM", run.pages, run.gpa));
    }
    return runs;
}

namespace {
bool has_token(uint32_t caps) { return caps & (kCapPostcopy | kCapUrgentChannel); }
}  // namespace

std::vector<uint8_t> encode_caps(uint32_t caps, uint64_t token) {
    StateWriter w;
    w.put(caps);
    if (has_token(caps)) w.put(token);
    return w.take();
}

Result<uint32_t> decode_caps(std::span<const uint8_t> payload, uint64_t* token_out) {
    if (payload.empty()) return 0u;
    StateReader r(payload);
    uint32_t caps = 0;
    uint64_t token = 0;
    if (!r.get(caps) || (has_token(caps) && !r.get(token)) || !r.at_end())
        return fail(Domain::Migration, "header-ack: malformed capabilities");
    if (token_out) *token_out = token;
    return caps;
}

}  // namespace ferry
