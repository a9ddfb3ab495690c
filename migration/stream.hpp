// The migration stream: framed, checksummed sections over a Channel.
//
//   section := kind:u16 version:u16 instance:u32 length:u64 | payload[length] | xxh3:u64
//   (xxh3 = XXH3-64 of the 16-byte frame header followed by the payload)
//
// Source -> destination: Header, then RamBatch* (rounds, each ended by Sync), then
// [Discard*] VcpuState* VmState DeviceState* StateEnd, then Go, then (postcopy only)
// RamBatch* until every page is in.  Destination -> source: HeaderAck after the header
// (with the capabilities it accepts), SyncAck after each Sync, Ready after StateEnd,
// Resumed after Go; in postcopy PageRequest* and PostcopyDone; Error (a reason) either
// way at any time.
// Lengths are capped (kMaxSectionPayload) before anything is allocated; a bad
// checksum, kind or version fails the section where it happens. A RAM batch is
// received whole, verified, decoded (decode_ram_batch: the one decoder) and only then
// placed into guest RAM through a PagePlacer. See docs/migration-protocol.md.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "memory/guest_memory.hpp"
#include "migration/channel.hpp"
#include "vmm/kvm.hpp"

namespace ferry {

enum class SectionKind : uint16_t {
    Header = 1,
    HeaderAck = 2,
    RamBatch = 3,
    VcpuState = 5,
    VmState = 6,
    DeviceState = 7,
    StateEnd = 8,
    Ready = 9,
    Go = 10,
    Resumed = 11,
    Error = 12,
    Sync = 13,     // src -> dst: answer with SyncAck once everything before is applied
    SyncAck = 14,  // dst -> src
    Discard = 15,       // src -> dst (postcopy switch): runs of pages dirtied since they were sent
    PageRequest = 16,   // dst -> src (postcopy): pages a fault is waiting for
    PostcopyDone = 17,  // dst -> src (postcopy): every page of RAM has arrived
    UrgentHello = 18,   // src -> dst, first on the second connection: the ack's token
    BootInfo = 19,      // src -> dst, after the header-ack: what a reset goes back to
    BootImage = 20,     // src -> dst: a chunk of the kernel, the initrd or the vCPUs' power-on state
    Resume = 21,          // src -> dst, first on a postcopy recovery connection: the ack's token
    ReceivedBitmap = 22,  // dst -> src (recovery): a slice of the bitmap of pages the destination holds
    ResumeAck = 23,       // dst -> src (recovery): the bitmap is complete; its page count
};
const char* section_name(SectionKind k);

// 2: virtio device state carries each device's type and own state (net or blk).
// 3: the header and its ack carry capabilities (postcopy); discard, page-request and
//    postcopy-done sections.
// 4: boot-info and boot-image sections (the power-on state and the boot images, so a
//    migrated guest can be reset), and the urgent-hello of postcopy-preempt.
// 5: postcopy recovery (resume, received-bitmap and resume-ack sections); the ack of a
//    postcopy migration always carries its token.
// 6: one device-state section per device, each a record with the device's id, kind and
//    version (devices/device_state.hpp), the 8250, RTC, PICs, IOAPIC and PIT included;
//    the VM state holds only kvmclock. The header insists on the same version at both
//    ends, so no decoder keeps an older layout.
inline constexpr uint32_t kStreamVersion = 6;
// Capability bits, in the header (what the source asks for) and the header-ack (what
// the destination accepts).
inline constexpr uint32_t kCapPostcopy = 1;
// In the header: the source sends each 2 MiB page whole during postcopy when asked.
// In the ack: the destination asks for that (it places 2 MiB pages: hugetlbfs).
inline constexpr uint32_t kCapHugePages = 2;
// Both: page answers travel on a second connection of their own (postcopy-preempt).
inline constexpr uint32_t kCapUrgentChannel = 4;
// RamBatch instance: pages pushed by the source (rounds, background stream), or
// answers to the destination's page requests.
inline constexpr uint32_t kRamPushed = 0;
inline constexpr uint32_t kRamAnswer = 1;
inline constexpr uint64_t kPageSize = 4096;
inline constexpr uint32_t kMaxBatchPages = 256;
inline constexpr uint64_t kMaxSectionPayload = 4 + kMaxBatchPages * (8 + kPageSize);  // a full RAM batch

struct SectionFrame {
    uint16_t kind;
    uint16_t version;
    uint32_t instance;
    uint64_t length;
};
static_assert(sizeof(SectionFrame) == 16);

struct RamBatchStats {
    uint64_t zero = 0, data = 0;
};

struct Section {
    SectionKind kind;
    uint16_t version;
    uint32_t instance;
    std::vector<uint8_t> payload;
};

// Writes one section (frame, payload pieces, checksum) with one writev.
Result<void> send_section(Channel& ch, SectionKind kind, uint32_t instance, std::span<const std::span<const uint8_t>> pieces);
Result<void> send_section(Channel& ch, SectionKind kind, uint32_t instance, std::span<const uint8_t> payload);
// Reads one section, refusing unknown kinds, versions outside [1, kStreamVersion],
// lengths over the cap and bad checksums.
Result<Section> recv_section(Channel& ch);
// The same into `into`, reusing its payload buffer (no allocation per section on the
// hot path of a migration).
Result<void> recv_section_into(Channel& ch, Section& into);
// Reads one section and insists on its kind (an Error section becomes its reason).
Result<Section> expect_section(Channel& ch, SectionKind kind);
// Error section instances: a plain failure, or (destination -> source, after Go) one
// that proves the destination never started the guest, so the source may resume it.
inline constexpr uint32_t kErrorFailed = 0;
inline constexpr uint32_t kErrorGuestNotStarted = 1;
// Best effort and bounded: gives up after `timeout` (a peer that reads nothing must
// not hold the sender).
Result<void> send_error(Channel& ch, const std::string& reason, uint32_t instance = kErrorFailed,
                        std::chrono::milliseconds timeout = std::chrono::seconds(2));
// The reason an Error section carries.
std::string error_reason(const Section& s);

// The stream header: what the source's guest looks like; the destination refuses a
// mismatch before any page is written.
struct StreamHeader {
    uint32_t version = kStreamVersion;
    uint32_t page_size = kPageSize;
    uint32_t cpus = 0;
    uint32_t tsc_khz = 0;
    uint32_t caps = 0;  // kCap* the source asks for
    std::vector<RamRange> ram;
    std::vector<kvm_cpuid_entry2> cpuid;  // the CPU the guest sees (vCPU 0)
};
std::vector<uint8_t> encode_header(const StreamHeader& h);
Result<StreamHeader> decode_header(std::span<const uint8_t> payload);
// Empty string when `theirs` can be received by a guest configured like `ours`.
std::string header_mismatch(const StreamHeader& ours, const StreamHeader& theirs);

// Whether a 4 KiB page is all zero (sent as a flag, no data).
inline bool page_is_zero(const uint8_t* p) {
    const auto* w = reinterpret_cast<const uint64_t*>(p);
    for (size_t i = 0; i < kPageSize / 8; i += 8)
        if (w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7]) return false;
    return true;
}

// RAM batch payload: count:u32, count x (gpa | flags):u64, then the data pages in
// order. Flags in the low bits of the page-aligned gpa.
inline constexpr uint64_t kPageFlagZero = 1;
inline constexpr uint64_t kPageFlagData = 2;

// One page of a decoded batch: where it goes and what goes there.
struct DecodedPage {
    uint64_t gpa;
    uint32_t region;       // index into GuestMemory::regions()
    uint64_t index;        // page index inside that region
    uint8_t* host;         // the guest page in this process
    const uint8_t* data;   // its 4 KiB inside the payload; nullptr for a zero page
};
// The one RAM batch decoder: validates the whole batch against `mem` (count capped,
// every gpa page-aligned and inside one region, flags known, data length exact) and
// fills `out` (capacity reused). Writes nothing.
Result<RamBatchStats> decode_ram_batch(const GuestMemory& mem, std::span<const uint8_t> payload, std::vector<DecodedPage>& out);

// How decoded pages land in guest RAM: a plain copy while nothing runs there
// (precopy), UFFDIO_COPY / UFFDIO_ZEROPAGE under userfaultfd (postcopy).
class PagePlacer {
public:
    virtual ~PagePlacer() = default;
    virtual Result<void> place(const DecodedPage& page) = 0;
    // After a batch's last page: a placer that gathers pages places what it holds.
    virtual Result<void> end_batch() { return {}; }
};
class DirectPlacer final : public PagePlacer {
public:
    // A zero page is cleared only if it is not zero already (a never-touched page
    // maps the shared zero page: reading it is cheap, writing it allocates).
    Result<void> place(const DecodedPage& page) override;
};

// Decodes a verified batch, then places every page through `placer`.
Result<RamBatchStats> place_ram_batch(const GuestMemory& mem, std::span<const uint8_t> payload, PagePlacer& placer,
                                      std::vector<DecodedPage>& scratch);
// place_ram_batch with a DirectPlacer (tests, fuzzers, precopy).
Result<RamBatchStats> apply_ram_batch(const GuestMemory& mem, std::span<const uint8_t> payload);

// Page lists (discard runs, page requests): u32 count, count x (u64 gpa, u32 pages).
struct PageRun {
    uint64_t gpa;
    uint32_t pages;
};
inline constexpr uint32_t kMaxRunsPerSection = 65536;
std::vector<uint8_t> encode_page_runs(std::span<const PageRun> runs);
// Refuses a run that is empty, unaligned, or not inside one RAM region of `mem`.
Result<std::vector<PageRun>> decode_page_runs(const GuestMemory& mem, std::span<const uint8_t> payload);

// The header-ack's payload: the capabilities the destination accepts, and with
// kCapPostcopy the migration's token: what the source's second connection
// (postcopy-preempt, its urgent-hello) and a recovery connection (its resume section)
// must present, the same 8 bytes.
std::vector<uint8_t> encode_caps(uint32_t caps, uint64_t token = 0);
Result<uint32_t> decode_caps(std::span<const uint8_t> payload, uint64_t* token = nullptr);

}  // namespace ferry
