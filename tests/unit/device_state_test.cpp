// Device records (devices/device_state.hpp): each device's state beside the device,
// with an id, a kind and a version that the loading side checks.
#include <catch2/catch.hpp>

#include "devices/device_state.hpp"
#include "devices/rtc.hpp"
#include "devices/serial.hpp"

using namespace ferry;

namespace {
Rtc make_rtc() {
    return Rtc(64 << 20, 0, 1, [] { return int64_t{1700000000}; });
}
}  // namespace

TEST_CASE("device records: the 8250 and the RTC round-trip their state", "[device-state]") {
    Serial a(-1, {});
    a.write(3, std::vector<uint8_t>{0x83});  // LCR with DLAB
    a.write(0, std::vector<uint8_t>{0x01});  // DLL
    a.write(7, std::vector<uint8_t>{0x5a});  // SCR
    auto rec = save_record(a);
    REQUIRE(rec);
    CHECK(rec->id == "serial0");
    CHECK(rec->kind == static_cast<uint32_t>(DeviceKind::Serial8250));
    CHECK(rec->version == 1);
    Serial b(-1, {});
    REQUIRE(load_record(b, *rec));
    CHECK(b.state().lcr == 0x83);
    CHECK(b.state().dll == 0x01);
    CHECK(b.state().scr == 0x5a);

    Rtc r1 = make_rtc();
    r1.write(0, std::vector<uint8_t>{0x0e});
    r1.write(1, std::vector<uint8_t>{0x77});  // CMOS byte 0x0e
    auto rr = save_record(r1);
    REQUIRE(rr);
    CHECK(rr->id == "rtc");
    Rtc r2 = make_rtc();
    REQUIRE(load_record(r2, *rr));
    CHECK(r2.state().cmos[0x0e] == 0x77);
}

TEST_CASE("device records: a record of another kind, a newer version or with bad contents is refused", "[device-state]") {
    Serial s(-1, {});
    Rtc rtc = make_rtc();
    auto rec = save_record(s);
    REQUIRE(rec);
    auto kind = load_record(rtc, *rec);
    REQUIRE_FALSE(kind);
    CHECK(kind.error().message().find("8250 UART") != std::string::npos);
    CHECK(kind.error().message().find("RTC") != std::string::npos);

    auto newer = *rec;
    newer.version = 2;
    auto v = load_record(s, newer);
    REQUIRE_FALSE(v);
    CHECK(v.error().message().find("version 2") != std::string::npos);
    newer.version = 0;
    CHECK_FALSE(load_record(s, newer));

    auto trailing = *rec;
    trailing.state.push_back(1);
    CHECK_FALSE(load_record(s, trailing));
    auto truncated = *rec;
    truncated.state.pop_back();
    CHECK_FALSE(load_record(s, truncated));
    // thre_pending (the last byte) is 0 or 1.
    auto bad = *rec;
    bad.state.back() = 2;
    CHECK_FALSE(load_record(s, bad));

    auto rr = save_record(rtc);
    REQUIRE(rr);
    rr->state[4] = 0x80;  // the index, past the 128-byte CMOS
    CHECK_FALSE(load_record(rtc, *rr));
}

TEST_CASE("device records: lists encode and decode; malformed ones are refused", "[device-state]") {
    std::vector<DeviceRecord> recs{{"serial0", 1, 1, {1, 2, 3}}, {"blk0", 0x102, 1, {}}};
    auto bytes = encode_records(recs);
    auto back = decode_records(bytes);
    REQUIRE(back);
    REQUIRE(back->size() == 2);
    CHECK((*back)[0].id == "serial0");
    CHECK((*back)[0].state == std::vector<uint8_t>{1, 2, 3});
    CHECK((*back)[1].kind == 0x102);

    for (size_t cut = 0; cut < bytes.size(); ++cut)
        CHECK_FALSE(decode_records(std::span<const uint8_t>(bytes.data(), cut)));
    auto longer = bytes;
    longer.push_back(0);
    CHECK_FALSE(decode_records(longer));

    for (std::string id : {std::string(), std::string("has space"), std::string(kMaxDeviceId + 1, 'x'), std::string("a\nb")})
        CHECK_FALSE(decode_records(encode_records({{id, 1, 1, {}}})));
    std::vector<DeviceRecord> many(kMaxDeviceRecords + 1, DeviceRecord{"x", 1, 1, {}});
    CHECK_FALSE(decode_records(encode_records(many)));
    CHECK(device_kind_name(0x102) == "virtio-blk");
    CHECK(device_kind_name(77) == "device kind 77");
}
