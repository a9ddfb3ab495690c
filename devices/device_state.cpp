#include "devices/device_state.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace ferry {

std::string device_kind_name(uint32_t kind) {
    switch (static_cast<DeviceKind>(kind)) {
        case DeviceKind::Serial8250: return "8250 UART";
        case DeviceKind::Rtc: return "RTC";
        case DeviceKind::Pic: return "PIC";
        case DeviceKind::Ioapic: return "IOAPIC";
        case DeviceKind::Pit: return "PIT";
        case DeviceKind::VirtioNet: return "virtio-net";
        case DeviceKind::VirtioBlk: return "virtio-blk";
    }
    return fmt::format("device kind {}", kind);
}

Result<DeviceRecord> save_record(const SavedDevice& d) {
    StateWriter w;
    if (auto ok = d.save(w); !ok) return std::unexpected(ok.error());
    return DeviceRecord{d.state_id(), static_cast<uint32_t>(d.state_kind()), d.state_version(), w.take()};
}

Result<void> load_record(SavedDevice& d, const DeviceRecord& rec) {
    const auto kind = static_cast<uint32_t>(d.state_kind());
    if (rec.kind != kind)
        return fail(Domain::Migration, fmt::format("{}: the source's device is a {}, this one a {}", rec.id, device_kind_name(rec.kind),
                                                   device_kind_name(kind)));
    if (rec.version == 0 || rec.version > d.state_version())
        return fail(Domain::Migration, fmt::format("{}: {} state version {}, this ferry reads 1..{} (a newer source?)", rec.id,
                                                   device_kind_name(kind), rec.version, d.state_version()));
    StateReader r(rec.state);
    if (auto ok = d.load(r, rec.version); !ok) return ok;
    if (!r.at_end()) return fail(Domain::Migration, fmt::format("{}: {} state has trailing bytes", rec.id, device_kind_name(kind)));
    return {};
}

void put_record(StateWriter& w, const DeviceRecord& rec) {
    w.put_string(rec.id);
    w.put(rec.kind);
    w.put(rec.version);
    w.put_bytes(rec.state);
}

Result<DeviceRecord> get_record(StateReader& r) {
    DeviceRecord rec;
    if (!r.get_string(rec.id, kMaxDeviceId) || !r.get(rec.kind) || !r.get(rec.version) || !r.get_bytes(rec.state, kMaxDeviceState))
        return fail(Domain::Migration, "device state: a record is truncated or too large");
    if (rec.id.empty() || !std::ranges::all_of(rec.id, [](char c) { return c > 0x20 && c < 0x7f; }))
        return fail(Domain::Migration, "device state: a record's id is empty or not printable");
    return rec;
}

Result<DeviceRecord> decode_record(std::span<const uint8_t> bytes) {
    StateReader r(bytes);
    auto rec = get_record(r);
    if (rec && !r.at_end()) return fail(Domain::Migration, "device state: trailing bytes after the record");
    return rec;
}

std::vector<uint8_t> encode_records(const std::vector<DeviceRecord>& recs) {
    StateWriter w;
    w.put(static_cast<uint32_t>(recs.size()));
    for (const auto& rec : recs) put_record(w, rec);
    return w.take();
}

Result<std::vector<DeviceRecord>> decode_records(std::span<const uint8_t> bytes) {
    StateReader r(bytes);
    uint32_t n = 0;
    if (!r.get(n) || n > kMaxDeviceRecords) return fail(Domain::Migration, "device state: bad record count");
    std::vector<DeviceRecord> recs;
    for (uint32_t i = 0; i < n; ++i) {
        auto rec = get_record(r);
        if (!rec) return std::unexpected(rec.error());
        recs.push_back(std::move(*rec));
    }
    if (!r.at_end()) return fail(Domain::Migration, "device state: trailing bytes after the records");
    return recs;
}

}  // namespace ferry
