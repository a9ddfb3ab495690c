// The migration stream: framed, checksummed sections over a Channel.
//
//   section := kind:u16 version:u16 instance:u32 length:u64 | payload[length] | xxh3:u64
//   (xxh3 = XXH3-64 of the 16-byte frame header followed by the payload)
//
// Source -> destination: Header, then RamBatch* (rounds, each ended by Sync), then
// VcpuState* VmState DeviceState StateEnd, then Go.  Destination -> source: HeaderAck
// after the header, SyncAck after each Sync, Ready after StateEnd, Resumed after Go;
// Error (a reason) either way at any time.
// Lengths are capped (kMaxSectionPayload) before anything is allocated; a bad
// checksum, kind or version fails the section where it happens. See
// docs/migration-protocol.md.
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
};
const char* section_name(SectionKind k);

// 2: virtio device state carries each device's type and own state (net or blk).
inline constexpr uint32_t kStreamVersion = 2;
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
Result<void> send_error(Channel& ch, const std::string& reason);

// The stream header: what the source's guest looks like; the destination refuses a
// mismatch before any page is written.
struct StreamHeader {
    uint32_t version = kStreamVersion;
    uint32_t page_size = kPageSize;
    uint32_t cpus = 0;
    uint32_t tsc_khz = 0;
    std::vector<RamRange> ram;
    std::vector<kvm_cpuid_entry2> cpuid;  // the CPU the guest sees (vCPU 0)
};
std::vector<uint8_t> encode_header(const StreamHeader& h);
Result<StreamHeader> decode_header(std::span<const uint8_t> payload);
// Empty string when `theirs` can be received by a guest configured like `ours`.
std::string header_mismatch(const StreamHeader& ours, const StreamHeader& theirs);

// Receives one section. A RAM batch goes straight into guest memory: its page table
// is read and validated whole first (as apply_ram_batch does), then its data pages
// are read into their guest pages and the checksum is checked over what landed (a
// batch that fails it leaves garbage in guest RAM: the migration fails and the guest
// never runs there). Returns the batch's figures, or nullopt with any other section
// in `other`.
Result<std::optional<RamBatchStats>> recv_section_or_ram(Channel& ch, const GuestMemory& mem, Section& other);

// RAM batch payload: count:u32, count x (gpa | flags):u64, then the data pages in
// order. Flags in the low bits of the page-aligned gpa.
inline constexpr uint64_t kPageFlagZero = 1;
inline constexpr uint64_t kPageFlagData = 2;
// Validates the whole batch against `mem` (every gpa page-aligned and inside RAM,
// flags known, data length exact) before writing any page; then writes it.
Result<RamBatchStats> apply_ram_batch(const GuestMemory& mem, std::span<const uint8_t> payload);

}  // namespace ferry
