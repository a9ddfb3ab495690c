#include "devices/platform.hpp"

#include <algorithm>

namespace ferry {

void ExitPort::read(uint64_t, std::span<uint8_t> data) { std::fill(data.begin(), data.end(), 0); }

void ExitPort::write(uint64_t offset, std::span<const uint8_t> data) {
    if (offset != 0 || data.empty()) return;
    uint32_t code = 0;
    for (size_t i = 0; i < data.size() && i < 4; ++i) code |= static_cast<uint32_t>(data[i]) << (8 * i);
    shutdown_(ShutdownRequest{ShutdownKind::PowerOff, static_cast<int>(code & 0xff), "guest power-off"});
}

void I8042::read(uint64_t offset, std::span<uint8_t> data) {
    std::fill(data.begin(), data.end(), 0);
    (void)offset;  // status 0: no data, input buffer empty
}

void I8042::write(uint64_t offset, std::span<const uint8_t> data) {
    if (offset == 4 && !data.empty() && data[0] == 0xfe)
        shutdown_(ShutdownRequest{ShutdownKind::Reset, 0, "guest reset through the i8042"});
}

void AcpiPm::read(uint64_t, std::span<uint8_t> data) { std::fill(data.begin(), data.end(), 0); }

void AcpiPm::write(uint64_t offset, std::span<const uint8_t> data) {
    if (data.empty()) return;
    const uint8_t v = data[0];
    if (offset == 0 && (v & 0x20) != 0 && ((v >> 2) & 7) == 5)  // SLP_EN, SLP_TYP 5 (\_S5)
        shutdown_(ShutdownRequest{ShutdownKind::PowerOff, 0, "guest power-off through ACPI (S5)"});
    else if (offset == 2 && v == 0x01)
        shutdown_(ShutdownRequest{ShutdownKind::Reset, 0, "guest reset through the ACPI reset register"});
}

}  // namespace ferry
