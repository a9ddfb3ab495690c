// A device's saved state, beside the device: every device with state (the 8250, the
// RTC, the in-kernel PIC, IOAPIC and PIT, each virtio device) implements SavedDevice and
// writes and reads its own bytes, and the machine carries them as one record per
// device (a migration sends each as its own device-state section; the power-on capture
// that reset and migration's boot state use holds the same records):
//
//   record := id (u32 length + bytes, 1..32 printable ASCII) | kind:u32 | version:u32
//             | state (u32 length + bytes, at most kMaxDeviceState)
//
// The id names the instance ("serial0", "rtc", "pic-master", "blk0"...), unique in a
// machine; the kind says what it is (a virtio-blk and a virtio-net with the same id
// differ); the version is that of the device's own encoding, raised when it changes.
// A destination matches records to its devices by id and refuses a missing, extra,
// different or too new one, naming the device (vmm/machine_state.cpp).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/state_io.hpp"

namespace ferry {

enum class DeviceKind : uint32_t {
    Serial8250 = 1,
    Rtc = 2,
    Pic = 3,     // the in-kernel 8259A, master or slave
    Ioapic = 4,  // the in-kernel IOAPIC
    Pit = 5,     // the in-kernel 8254
    VirtioNet = 0x101,  // 0x100 + the virtio device type
    VirtioBlk = 0x102,
};

// "8250 UART", "virtio-blk"... or "device kind N".
std::string device_kind_name(uint32_t kind);

inline constexpr size_t kMaxDeviceId = 32;
inline constexpr size_t kMaxDeviceState = 256 * 1024;
inline constexpr size_t kMaxDeviceRecords = 64;

struct DeviceRecord {
    std::string id;
    uint32_t kind = 0;
    uint32_t version = 0;
    std::vector<uint8_t> state;
};

class SavedDevice {
public:
    virtual ~SavedDevice() = default;
    virtual std::string state_id() const = 0;
    virtual DeviceKind state_kind() const = 0;
    // The version save() writes, the newest load() reads.
    virtual uint32_t state_version() const = 0;
    // Writes the device's state. Never writes guest RAM: the machine drains its devices
    // (vCPUs paused) before it saves.
    virtual Result<void> save(StateWriter& w) const = 0;
    // Checks all of `r` (written by save() at `version`, 1..state_version()) and only
    // then applies it; an error names the device.
    virtual Result<void> load(StateReader& r, uint32_t version) = 0;
};

// The device's record (its save() with its id, kind and version).
Result<DeviceRecord> save_record(const SavedDevice& d);
// Checks the record's kind and version against `d`, then loads it (the whole state
// must be read).
Result<void> load_record(SavedDevice& d, const DeviceRecord& rec);

void put_record(StateWriter& w, const DeviceRecord& rec);
// Refuses a malformed record: an id that is empty, too long or not printable, a
// state over kMaxDeviceState, truncated bytes.
Result<DeviceRecord> get_record(StateReader& r);
// Exactly one record in `bytes` (a device-state section's payload): trailing bytes are refused.
Result<DeviceRecord> decode_record(std::span<const uint8_t> bytes);

// A list of records: u32 count (at most kMaxDeviceRecords), then each record.
std::vector<uint8_t> encode_records(const std::vector<DeviceRecord>& recs);
Result<std::vector<DeviceRecord>> decode_records(std::span<const uint8_t> bytes);

}  // namespace ferry
