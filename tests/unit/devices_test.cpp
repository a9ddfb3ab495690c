// Bus dispatch and the 8250 UART register model.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>

#include "devices/bus.hpp"
#include "devices/platform.hpp"
#include "devices/serial.hpp"

using namespace ferry;

namespace {
struct Recorder : BusDevice {
    std::string name;
    uint64_t last_offset = ~0ull;
    explicit Recorder(std::string n) : name(std::move(n)) {}
    std::string id() const override { return name; }
    void read(uint64_t off, std::span<uint8_t> d) override {
        last_offset = off;
        for (auto& b : d) b = 0x42;
    }
    void write(uint64_t off, std::span<const uint8_t>) override { last_offset = off; }
};
}  // namespace

TEST_CASE("bus routes by range and refuses overlaps", "[bus]") {
    Bus bus("pio");
    auto a = std::make_shared<Recorder>("a");
    REQUIRE(bus.add(0x3f8, 8, a));
    CHECK_FALSE(bus.add(0x3ff, 2, std::make_shared<Recorder>("b")));
    CHECK_FALSE(bus.add(0x3f0, 9, std::make_shared<Recorder>("c")));
    CHECK_FALSE(bus.add(0x10, 0, std::make_shared<Recorder>("d")));
    CHECK(bus.add(0x400, 1, std::make_shared<Recorder>("e")));

    uint8_t buf[4] = {};
    CHECK(bus.read(0x3fa, std::span<uint8_t>(buf, 1)));
    CHECK(a->last_offset == 2);
    CHECK(buf[0] == 0x42);
    // An access that runs past the device's range is not the device's.
    CHECK_FALSE(bus.read(0x3fe, std::span<uint8_t>(buf, 4)));
    CHECK(buf[0] == 0xff);
    CHECK_FALSE(bus.write(0x1000, std::span<const uint8_t>(buf, 1)));
    CHECK_FALSE(bus.read(UINT64_MAX, std::span<uint8_t>(buf, 4)));
}

TEST_CASE("8250 transmits bytes and reports an empty transmitter", "[serial]") {
    int p[2];
    REQUIRE(::pipe(p) == 0);
    int irq_changes = 0;
    bool level = false;
    Serial s(p[1], [&](bool l) {
        ++irq_changes;
        level = l;
    });
    auto out = [&](uint64_t reg, uint8_t v) { s.write(reg, std::span<const uint8_t>(&v, 1)); };
    auto in = [&](uint64_t reg) {
        uint8_t v = 0;
        s.read(reg, std::span<uint8_t>(&v, 1));
        return v;
    };
    CHECK((in(5) & 0x60) == 0x60);  // THRE | TEMT
    out(0, 'h');
    out(0, 'i');
    char got[2] = {};
    REQUIRE(::read(p[0], got, 2) == 2);
    CHECK(std::string(got, 2) == "hi");

    // Divisor latch does not transmit.
    out(3, 0x80);
    out(0, 0x01);
    CHECK(in(0) == 0x01);
    out(3, 0x03);

    // THRE interrupt: raised when enabled, cleared by reading IIR.
    out(1, 0x02);
    CHECK(level);
    CHECK((in(2) & 0x0f) == 0x02);
    CHECK_FALSE(level);
    CHECK((in(2) & 0x0f) == 0x01);
    out(0, 'x');
    CHECK(level);
    CHECK(irq_changes == 3);
    // Out-of-range offsets are ignored.
    s.write(100, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>("z"), 1));
    ::close(p[0]);
    ::close(p[1]);
}

TEST_CASE("exit port and i8042 reset request shutdowns", "[platform]") {
    std::vector<ShutdownRequest> seen;
    ShutdownFn fn = [&](ShutdownRequest r) { seen.push_back(r); };
    ExitPort exit_port(fn);
    uint32_t code = 7;
    exit_port.write(0, std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&code), 4));
    I8042 kbd(fn);
    uint8_t other = 0x01, reset = 0xfe;
    kbd.write(4, std::span<const uint8_t>(&other, 1));
    kbd.write(0, std::span<const uint8_t>(&reset, 1));
    kbd.write(4, std::span<const uint8_t>(&reset, 1));
    REQUIRE(seen.size() == 2);
    CHECK(seen[0].kind == ShutdownKind::PowerOff);
    CHECK(seen[0].code == 7);
    CHECK(seen[1].kind == ShutdownKind::Reset);
}
