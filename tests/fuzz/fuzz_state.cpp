// fuzz_state: the serial port's and the RTC's migrated state (devices/serial.*,
// devices/rtc.*): whatever bytes a migration stream carries for them are decoded,
// restored with set_state, and the devices are then driven by a hostile guest.
//
// The decode+validate step lives in Machine::restore_devices (vmm/machine_state.cpp),
// which cannot be reached without a KVM VM: the harness does what it does, in the same
// order, with the same StateReader calls and the same checks (thre_pending <= 1,
// index < 128); a state those checks refuse is restored anyway (set_state must
// withstand any field values), but the round trip below is then not checked.
//
// Input layout (short inputs are zero-filled):
//   u32 clock      the host clock the RTC reads, seconds since the epoch (1970-2106)
//   the device state, as Machine::save_devices writes it:
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
// and, after the accesses, the state saved passes the checks again and restores into
// fresh devices unchanged.
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

// Machine::restore_devices' checks on the two states (vmm/machine_state.cpp).
bool serial_valid(const Serial::State& s) { return s.thre_pending <= 1; }
bool rtc_valid(const Rtc::State& s) { return s.index < sizeof(s.cmos); }

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

    // What Machine::restore_devices does with the stream's bytes.
    StateReader r(state_bytes);
    Serial::State st;
    Rtc::State rtc;
    if (!r.get_struct(st) || !r.get_struct(rtc)) return 0;  // refused before anything is restored
    const bool valid = serial_valid(st) && rtc_valid(rtc);

    Line line;
    Serial serial(null_fd(), line.fn());
    Rtc clock_rtc(256ull << 20, 0, 1, [clock] { return clock; });
    serial.set_state(st);
    clock_rtc.set_state(rtc);
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

    // The state a migration would carry now: it must pass the checks and restore as is.
    if (valid) {
        StateWriter w;
        w.put_struct(serial.state());
        w.put_struct(clock_rtc.state());
        StateReader again(w.bytes());
        Serial::State st2;
        Rtc::State rtc2;
        if (!again.get_struct(st2) || !again.get_struct(rtc2) || !again.at_end()) __builtin_trap();
        if (!serial_valid(st2) || !rtc_valid(rtc2)) __builtin_trap();
        Line line2;
        Serial serial2(null_fd(), line2.fn());
        Rtc rtc_again(256ull << 20, 0, 1, [clock] { return clock; });
        serial2.set_state(st2);
        rtc_again.set_state(rtc2);
        if (!same(serial2.state(), st2) || !same(rtc_again.state(), rtc2)) __builtin_trap();
        if (line2.level != line.level) __builtin_trap();  // the restored line is where it was
    }
    return 0;
}
