// CMOS RTC and NVRAM (MC146818: index port 0x70, data port 0x71), what a PC guest
// reads early: the time of day from the host clock and the memory sizes a BIOS
// leaves there.
//
//   port 0x70: index (bit 7 = NMI mask, ignored); reads 0xff.   port 0x71: data
//   0x00 seconds  0x02 minutes  0x04 hours  0x06 weekday (1 = Sunday)  0x07 day
//   0x08 month  0x09 year (2 digits)  0x32 century      (BCD unless B.DM, 24-hour
//                                                        unless B.24H is clear)
//   0x01/0x03/0x05 alarm: stored, never fires
//   0x0a A: UIP always 0, divider 32.768 kHz, rate 1024 Hz (0x26); bits 0-6 writable
//   0x0b B: 0x02 (24-hour, BCD); the guest may set DM (binary) or clear 24H
//   0x0c C: interrupt flags, always 0 (the RTC raises no interrupt)
//   0x0d D: VRT = 1 (0x80): battery good
//   0x17/0x18 and 0x30/0x31: KiB of RAM above 1 MiB (capped at 0xffff)
//   0x34/0x35: 64 KiB blocks of RAM between 16 MiB and the end of RAM below 4 GiB
//   0x5b/0x5c/0x5d: 64 KiB blocks of RAM above 4 GiB      0x5f: vCPUs - 1 (as QEMU)
// Writing a time register moves the guest's clock against the host's (an offset in
// seconds, at most kMaxOffsetS either way); all other bytes are plain NVRAM.
// Multi-byte accesses use the first byte.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>

#include "devices/bus.hpp"
#include "devices/device_state.hpp"

namespace ferry {

inline constexpr uint16_t kRtcPort = 0x70;

class Rtc : public BusDevice, public SavedDevice {
public:
    using Clock = std::function<int64_t()>;  // seconds since the epoch (UTC)
    // `low_ram`: bytes of RAM below 4 GiB (from 0), `high_ram`: above 4 GiB.
    // Without a clock, the host's realtime clock.
    Rtc(uint64_t low_ram, uint64_t high_ram, uint32_t cpus, Clock clock = {});

    std::string id() const override { return "rtc"; }
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // The largest offset of the guest's clock from the host's, either way (~31,700
    // years): room for every date the registers can be set to (years 1900-9999) from
    // any plausible host clock, and no overflow with any. set_state clamps to it, and
    // so does a time register write, so the state a guest leaves always restores as is.
    static constexpr int64_t kMaxOffsetS = 1'000'000'000'000;

    // Plain register state, for save/restore.
    struct State {
        uint8_t index = 0;
        uint8_t reserved[7] = {};
        int64_t offset_s = 0;  // guest time - host time
        uint8_t cmos[128] = {};
    };
    State state() const;
    void set_state(const State& s);

    // Its record: State, length-prefixed (version 1); load refuses an index past the
    // CMOS and clamps the offset as set_state does.
    std::string state_id() const override { return id(); }
    DeviceKind state_kind() const override { return DeviceKind::Rtc; }
    uint32_t state_version() const override { return 1; }
    Result<void> save(StateWriter& w) const override;
    Result<void> load(StateReader& r, uint32_t version) override;

private:
    uint8_t read_reg(uint8_t reg);
    void write_reg(uint8_t reg, uint8_t v);
    bool is_time_reg(uint8_t reg) const;
    uint8_t encode(int v) const;      // BCD or binary, as register B says
    int decode(uint8_t v) const;

    mutable std::mutex mu_;
    State s_;
    Clock clock_;
};

}  // namespace ferry
