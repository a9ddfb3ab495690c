#include "devices/serial.hpp"

#include <unistd.h>

#include <cerrno>

namespace ferry {

namespace {
constexpr uint8_t kLcrDlab = 0x80;
constexpr uint8_t kIerThri = 0x02;
constexpr uint8_t kIirNone = 0x01, kIirThri = 0x02;
constexpr uint8_t kLsrThre = 0x20, kLsrTemt = 0x40;
constexpr uint8_t kMcrLoop = 0x10;
}  // namespace

void Serial::read(uint64_t offset, std::span<uint8_t> data) {
    if (data.empty()) return;
    std::lock_guard lock(mu_);
    // Wider accesses read the first register and zero the rest.
    data[0] = offset < 8 ? read_reg(offset) : 0xff;
    for (size_t i = 1; i < data.size(); ++i) data[i] = 0;
}

void Serial::write(uint64_t offset, std::span<const uint8_t> data) {
    if (data.empty() || offset >= 8) return;
    std::lock_guard lock(mu_);
    write_reg(offset, data[0]);
}

uint8_t Serial::read_reg(uint64_t reg) {
    switch (reg) {
        case 0:
            if (s_.lcr & kLcrDlab) return s_.dll;
            return 0;  // no receive data
        case 1:
            if (s_.lcr & kLcrDlab) return s_.dlm;
            return s_.ier;
        case 2: {
            uint8_t fifo = (s_.fcr & 1) ? 0xc0 : 0;
            if ((s_.ier & kIerThri) && s_.thre_pending) {
                s_.thre_pending = 0;  // reading IIR acknowledges THRE
                update_irq();
                return fifo | kIirThri;
            }
            return fifo | kIirNone;
        }
        case 3: return s_.lcr;
        case 4: return s_.mcr;
        case 5: return kLsrThre | kLsrTemt;
        case 6:
            if (s_.mcr & kMcrLoop) {
                // Loopback: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
                return static_cast<uint8_t>(((s_.mcr & 1) << 5) | ((s_.mcr & 2) << 3) | ((s_.mcr & 4) << 4) | ((s_.mcr & 8) << 4));
            }
            return 0xb0;  // DCD, DSR, CTS
        case 7: return s_.scr;
    }
    return 0xff;
}

void Serial::write_reg(uint64_t reg, uint8_t v) {
    switch (reg) {
        case 0:
            if (s_.lcr & kLcrDlab) {
                s_.dll = v;
            } else {
                if (!(s_.mcr & kMcrLoop)) emit(v);
                s_.thre_pending = 1;  // transmit is instantaneous
                update_irq();
            }
            break;
        case 1:
            if (s_.lcr & kLcrDlab) {
                s_.dlm = v;
            } else {
                uint8_t old = s_.ier;
                s_.ier = v & 0x0f;
                if (!(old & kIerThri) && (s_.ier & kIerThri)) s_.thre_pending = 1;
                update_irq();
            }
            break;
        case 2: s_.fcr = v; break;
        case 3: s_.lcr = v; break;
        case 4: s_.mcr = v & 0x1f; break;
        case 7: s_.scr = v; break;
        default: break;  // LSR/MSR are read-only
    }
}

void Serial::emit(uint8_t byte) {
    if (out_fd_ < 0) return;
    for (;;) {
        ssize_t n = ::write(out_fd_, &byte, 1);
        if (n == 1) return;
        if (n < 0 && errno == EINTR && !abandoned_) continue;
        return;  // console gone: drop the byte, never stall the guest on it
    }
}

void Serial::update_irq() {
    bool level = (s_.ier & kIerThri) && s_.thre_pending;
    if (level != irq_level_) {
        irq_level_ = level;
        if (irq_) irq_(level);
    }
}

Serial::State Serial::state() const {
    std::lock_guard lock(mu_);
    return s_;
}

void Serial::set_state(const State& s) {
    std::lock_guard lock(mu_);
    s_ = s;
    update_irq();
}

Result<void> Serial::save(StateWriter& w) const {
    w.put_struct(state());
    return {};
}

Result<void> Serial::load(StateReader& r, uint32_t) {
    State s;
    if (!r.get_struct(s) || s.thre_pending > 1) return fail(Domain::Migration, id() + ": 8250 state is malformed");
    set_state(s);
    return {};
}

}  // namespace ferry
