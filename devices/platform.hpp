// Small platform devices:
//  - ExitPort (port 0xf4, 4 bytes): a write powers the machine off with the written
//    value as the exit status (the test guest's power-off; the same port as QEMU's
//    isa-debug-exit, which reports (code<<1)|1 instead).
//  - I8042 (ports 0x60, 0x64): just enough of the keyboard controller for the
//    reset command 0xfe that Linux's reboot path and BIOSes use.
#pragma once

#include "devices/bus.hpp"
#include "devices/shutdown.hpp"

namespace ferry {

inline constexpr uint16_t kExitPort = 0xf4;

class ExitPort : public BusDevice {
public:
    explicit ExitPort(ShutdownFn fn) : shutdown_(std::move(fn)) {}
    std::string id() const override { return "exit-port"; }
    void read(uint64_t, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

private:
    ShutdownFn shutdown_;
};

class I8042 : public BusDevice {
public:
    explicit I8042(ShutdownFn fn) : shutdown_(std::move(fn)) {}
    std::string id() const override { return "i8042"; }
    // Registered at 0x60 with length 5 (0x60..0x64); only +0 and +4 respond.
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

private:
    ShutdownFn shutdown_;
};

}  // namespace ferry
