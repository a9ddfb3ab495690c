#include "devices/rtc.hpp"

#include <algorithm>
#include <chrono>
#include <ctime>

namespace ferry {

namespace {

constexpr uint8_t kSeconds = 0x00, kMinutes = 0x02, kHours = 0x04, kWeekday = 0x06, kDay = 0x07, kMonth = 0x08,
                  kYear = 0x09, kRegA = 0x0a, kRegB = 0x0b, kRegC = 0x0c, kRegD = 0x0d, kCentury = 0x32;
constexpr uint8_t kRegADefault = 0x26;  // 32.768 kHz time base, 1024 Hz periodic rate
constexpr uint8_t kRegAUip = 0x80;
constexpr uint8_t kRegBDm = 0x04;       // binary (not BCD)
constexpr uint8_t kRegB24h = 0x02;
constexpr uint8_t kRegDVrt = 0x80;
constexpr uint8_t kHourPm = 0x80;       // 12-hour mode
constexpr uint64_t kMiB = 1ull << 20;

int64_t host_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void put16(uint8_t* cmos, uint8_t reg, uint64_t v) {
    v = std::min<uint64_t>(v, 0xffff);
    cmos[reg] = static_cast<uint8_t>(v);
    cmos[reg + 1] = static_cast<uint8_t>(v >> 8);
}

}  // namespace

Rtc::Rtc(uint64_t low_ram, uint64_t high_ram, uint32_t cpus, Clock clock) : clock_(std::move(clock)) {
    if (!clock_) clock_ = host_now;
    // glibc's gmtime_r and timegm read the time zone on their first use (/etc/localtime,
    // an openat): let that happen now, during setup, and not first on a vCPU thread
    // under its seccomp filter, which may not open files.
    ::tzset();
    s_.cmos[kRegA] = kRegADefault;
    s_.cmos[kRegB] = kRegB24h;
    s_.cmos[kRegD] = kRegDVrt;
    uint64_t ext = low_ram > kMiB ? (low_ram - kMiB) / 1024 : 0;
    put16(s_.cmos, 0x17, ext);
    put16(s_.cmos, 0x30, ext);
    put16(s_.cmos, 0x34, low_ram > 16 * kMiB ? (low_ram - 16 * kMiB) / (64 * 1024) : 0);
    uint64_t high = std::min<uint64_t>(high_ram / (64 * 1024), 0xffffff);
    s_.cmos[0x5b] = static_cast<uint8_t>(high);
    s_.cmos[0x5c] = static_cast<uint8_t>(high >> 8);
    s_.cmos[0x5d] = static_cast<uint8_t>(high >> 16);
    s_.cmos[0x5f] = static_cast<uint8_t>(cpus ? cpus - 1 : 0);
}

void Rtc::read(uint64_t offset, std::span<uint8_t> data) {
    if (data.empty()) return;
    std::fill(data.begin(), data.end(), 0);
    std::lock_guard lock(mu_);
    data[0] = offset == 1 ? read_reg(s_.index) : 0xff;  // the index port is write-only
}

void Rtc::write(uint64_t offset, std::span<const uint8_t> data) {
    if (data.empty()) return;
    std::lock_guard lock(mu_);
    if (offset == 0) s_.index = data[0] & 0x7f;
    else if (offset == 1) write_reg(s_.index, data[0]);
}

Rtc::State Rtc::state() const {
    std::lock_guard lock(mu_);
    return s_;
}

void Rtc::set_state(const State& s) {
    std::lock_guard lock(mu_);
    s_ = s;
    s_.index &= 0x7f;
    s_.offset_s = std::clamp(s_.offset_s, -kMaxOffsetS, kMaxOffsetS);
}

Result<void> Rtc::save(StateWriter& w) const {
    w.put_struct(state());
    return {};
}

Result<void> Rtc::load(StateReader& r, uint32_t) {
    State s;
    if (!r.get_struct(s) || s.index >= sizeof(s.cmos)) return fail(Domain::Migration, id() + ": RTC state is malformed");
    set_state(s);
    return {};
}

bool Rtc::is_time_reg(uint8_t reg) const {
    return reg == kSeconds || reg == kMinutes || reg == kHours || reg == kWeekday || reg == kDay || reg == kMonth ||
           reg == kYear || reg == kCentury;
}

uint8_t Rtc::encode(int v) const {
    if (s_.cmos[kRegB] & kRegBDm) return static_cast<uint8_t>(v);
    return static_cast<uint8_t>(((v / 10) % 10) << 4 | (v % 10));
}

int Rtc::decode(uint8_t v) const {
    if (s_.cmos[kRegB] & kRegBDm) return v;
    return (v >> 4) * 10 + (v & 0xf);
}

uint8_t Rtc::read_reg(uint8_t reg) {
    if (!is_time_reg(reg)) {
        switch (reg) {
            case kRegA: return s_.cmos[kRegA] & static_cast<uint8_t>(~kRegAUip);
            case kRegC: return 0;
            case kRegD: return kRegDVrt;
            default: return s_.cmos[reg & 0x7f];
        }
    }
    time_t t = static_cast<time_t>(clock_() + s_.offset_s);
    struct tm tm {};
    if (!gmtime_r(&t, &tm)) return 0;
    switch (reg) {
        case kSeconds: return encode(tm.tm_sec);
        case kMinutes: return encode(tm.tm_min);
        case kHours:
            if (s_.cmos[kRegB] & kRegB24h) return encode(tm.tm_hour);
            return static_cast<uint8_t>(encode(tm.tm_hour % 12 == 0 ? 12 : tm.tm_hour % 12) | (tm.tm_hour >= 12 ? kHourPm : 0));
        case kWeekday: return encode(tm.tm_wday + 1);
        case kDay: return encode(tm.tm_mday);
        case kMonth: return encode(tm.tm_mon + 1);
        case kYear: return encode((tm.tm_year + 1900) % 100);
        case kCentury: return encode((tm.tm_year + 1900) / 100);
    }
    return 0;
}

void Rtc::write_reg(uint8_t reg, uint8_t v) {
    if (!is_time_reg(reg)) {
        switch (reg) {
            case kRegA: s_.cmos[kRegA] = v & static_cast<uint8_t>(~kRegAUip); return;
            case kRegC:
            case kRegD: return;  // read-only
            default: s_.cmos[reg & 0x7f] = v; return;
        }
    }
    // Replace one field of the guest's current time and keep the new offset.
    int64_t now = clock_();
    time_t t = static_cast<time_t>(now + s_.offset_s);
    struct tm tm {};
    if (!gmtime_r(&t, &tm)) return;
    switch (reg) {
        case kSeconds: tm.tm_sec = std::clamp(decode(v), 0, 59); break;
        case kMinutes: tm.tm_min = std::clamp(decode(v), 0, 59); break;
        case kHours:
            if (s_.cmos[kRegB] & kRegB24h) tm.tm_hour = std::clamp(decode(v), 0, 23);
            else tm.tm_hour = std::clamp(decode(v & 0x7f), 1, 12) % 12 + ((v & kHourPm) ? 12 : 0);
            break;
        case kWeekday: return;  // derived from the date
        case kDay: tm.tm_mday = std::clamp(decode(v), 1, 31); break;
        case kMonth: tm.tm_mon = std::clamp(decode(v), 1, 12) - 1; break;
        case kYear: tm.tm_year = (tm.tm_year + 1900) / 100 * 100 + std::clamp(decode(v), 0, 99) - 1900; break;
        case kCentury: tm.tm_year = std::clamp(decode(v), 19, 99) * 100 + (tm.tm_year + 1900) % 100 - 1900; break;
    }
    time_t set = timegm(&tm);
    if (set != static_cast<time_t>(-1)) s_.offset_s = std::clamp(static_cast<int64_t>(set) - now, -kMaxOffsetS, kMaxOffsetS);
}

}  // namespace ferry
