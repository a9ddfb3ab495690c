// Small platform devices:
//  - ExitPort (port 0xf4, 4 bytes): a write powers the machine off with the written
//    value as the exit status (the test guest's power-off; the same port as QEMU's
//    isa-debug-exit, which reports (code<<1)|1 instead).
//  - I8042 (ports 0x60, 0x64): just enough of the keyboard controller for the
//    reset command 0xfe that Linux's reboot path and BIOSes use.
//  - AcpiPm (ports 0x600-0x602): the hardware-reduced ACPI registers the FADT names
//    (vmm/boot/acpi.hpp). 0x600 sleep control: a write with SLP_EN and SLP_TYP 5 (0x34)
//    powers the machine off with status 0, other sleep types are ignored (the DSDT
//    offers only \_S5); 0x601 sleep status: reads 0 (no wake event ever), writes
//    ignored; 0x602 reset: the value 1 resets the machine, as the i8042's 0xfe does.
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

inline constexpr uint16_t kAcpiPmPort = 0x600;

class AcpiPm : public BusDevice {
public:
    explicit AcpiPm(ShutdownFn fn) : shutdown_(std::move(fn)) {}
    std::string id() const override { return "acpi-pm"; }
    // Registered at 0x600 with length 3.
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

private:
    ShutdownFn shutdown_;
};

}  // namespace ferry
