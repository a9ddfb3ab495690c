// fuzz_state: the serial port's and the RTC's migrated state (devices/serial.*,
// devices/rtc.*): whatever bytes a migration stream carries for them are decoded,
// restored with set_state, and the devices are then driven by a hostile guest.
//
// The decode and the checks are the devices' own (Serial::load, Rtc::load: the state
// beside each device, devices/device_state.hpp), the code a destination runs on each
// record. A state they refuse is then set anyway with set_state (which must withstand
// any field values), but the round trip below is not checked.
//
// Input layout (short inputs are zero-filled):
//   u32 clock      the host clock the RTC reads, seconds since the epoch (1970-2106)
//   the two records' state bytes, as Serial::save and Rtc::save write them:
//     u32 size (8),   Serial::State {ier, lcr, mcr, scr, dll, dlm, fcr, thre_pending}
//     u32 size (144), Rtc::State {index, reserved[7], i64 offset_s, cmos[128]}
//   the rest       guest port accesses, 2 bytes each:
//     u8 op        bit0: 0 serial, 1 RTC; bit1: 0 read, 1 write; bits 2-3: size 1,
//                  2, 4 or 8 bytes; bits 4-6: the offset (the serial's 8 ports; the
//                  RTC's 0x70 and 0x71, 2 and 3 being outside its window)
//     u8 value     written (the first byte of a wider write; the rest repeat it)
//
// Checks beyond "no crash": the serial's interrupt line only ever changes level; after
// a validated restore, state() gives back what was restored (the RTC's offset clamped)
// and, after the accesses, each device's record (save_record) loads into fresh devices
// (load_record) unchanged.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "base/state_io.hpp"
#include "devices/rtc.hpp"
#include "devices/serial.hpp"
#include "tests/fuzz/fuzz_input.hpp"

using namespace ferry;
using namespace ferry::fuzz;

namespace {

constexpr size_t kStateBytes = 4 + sizeof(Serial::State) + 4 + sizeof(Rtc::State);

bool same(const Serial::State& a, const Serial::State& b) { return std::memcmp(&a, &b, sizeof(a)) == 0; }
bool same(const Rtc::State& a, const Rtc::State& b) { return std::memcmp(&a, &b, sizeof(a)) == 0; }

// The console: transmitted bytes go nowhere, through a real write.
int null_fd() {
    static int fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    return fd;
}

// A serial whose interrupt line must toggle: raised twice in a row is a bug.
struct Line {
    bool level = false;
    Serial::IrqFn fn() {
        return [this](bool l) {
            if (l == level) __builtin_trap();
            level = l;
        };
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    FuzzInput in(data, size);
    const int64_t clock = in.take<uint32_t>();
    auto state_bytes = in.take_bytes(kStateBytes);

    // Each record's bytes, decoded and checked by the device itself.
    const size_t serial_bytes = std::min(state_bytes.size(), 4 + sizeof(Serial::State));
    StateReader raw(state_bytes);
    Serial::State st;
    Rtc::State rtc;
    if (!raw.get_struct(st) || !raw.get_struct(rtc)) return 0;  // refused before anything is restored

    Line line;
    Serial serial(null_fd(), line.fn());
    Rtc clock_rtc(256ull << 20, 0, 1, [clock] { return clock; });
    StateReader rs(state_bytes.first(serial_bytes));
    StateReader rr(state_bytes.subspan(serial_bytes));
    const bool serial_ok = serial.load(rs, 1).has_value() && rs.at_end();
    const bool rtc_ok = clock_rtc.load(rr, 1).has_value() && rr.at_end();
    const bool valid = serial_ok && rtc_ok;
    if (!serial_ok) serial.set_state(st);  // refused: set anyway, set_state must cope
    if (!rtc_ok) clock_rtc.set_state(rtc);
    if (valid) {
        Rtc::State want = rtc;
        want.offset_s = std::clamp(want.offset_s, -Rtc::kMaxOffsetS, Rtc::kMaxOffsetS);
        if (!same(serial.state(), st) || !same(clock_rtc.state(), want)) __builtin_trap();
    }

    for (size_t n = 0; in.left() >= 2 && n < 4096; ++n) {
        const auto op = in.take<uint8_t>();
        const auto value = in.take<uint8_t>();
        const size_t len = size_t{1} << ((op >> 2) & 3);
        uint8_t buf[8];
        std::memset(buf, value, sizeof(buf));
        BusDevice& dev = (op & 1) ? static_cast<BusDevice&>(clock_rtc) : serial;
        const uint64_t offset = (op & 1) ? (op >> 4) & 3 : (op >> 4) & 7;
        if (op & 2) dev.write(offset, std::span<const uint8_t>(buf, len));
        else dev.read(offset, std::span<uint8_t>(buf, len));
    }

    // The records a migration would carry now: they must load into fresh devices as is.
    if (valid) {
        auto srec = save_record(serial);
        auto rrec = save_record(clock_rtc);
        if (!srec || !rrec) __builtin_trap();
        Line line2;
        Serial serial2(null_fd(), line2.fn());
        Rtc rtc_again(256ull << 20, 0, 1, [clock] { return clock; });
        if (!load_record(serial2, *srec) || !load_record(rtc_again, *rrec)) __builtin_trap();
        if (!same(serial2.state(), serial.state()) || !same(rtc_again.state(), clock_rtc.state())) __builtin_trap();
        if (line2.level != line.level) __builtin_trap();  // the restored line is where it was
    }
    return 0;
}
