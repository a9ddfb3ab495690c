// 8250/16550A UART (the PC's COM1 at 0x3f8, IRQ 4). Transmit goes to a host fd
// (stdout unbuffered, or a file); the receive side is empty. Registers:
//   +0 RBR/THR (DLL when LCR.DLAB)   +1 IER (DLM when DLAB)   +2 IIR/FCR
//   +3 LCR  +4 MCR  +5 LSR  +6 MSR  +7 SCR
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>

#include "devices/bus.hpp"
#include "devices/device_state.hpp"

namespace ferry {

class Serial : public BusDevice, public SavedDevice {
public:
    using IrqFn = std::function<void(bool level)>;
    // Writes every transmitted byte to `out_fd` (not owned), raising `irq` as the
    // IER/IIR state says.
    Serial(int out_fd, IrqFn irq) : out_fd_(out_fd), irq_(std::move(irq)) {}

    std::string id() const override { return "serial0"; }
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // Plain register state, for save/restore.
    struct State {
        uint8_t ier = 0, lcr = 0, mcr = 0, scr = 0, dll = 0x0c, dlm = 0, fcr = 0;
        uint8_t thre_pending = 0;  // 0 or 1 (restored from a stream: no bool)
    };
    State state() const;
    void set_state(const State& s);

    // Its record: State, length-prefixed (version 1); load refuses thre_pending > 1.
    std::string state_id() const override { return id(); }
    DeviceKind state_kind() const override { return DeviceKind::Serial8250; }
    uint32_t state_version() const override { return 1; }
    Result<void> save(StateWriter& w) const override;
    Result<void> load(StateReader& r, uint32_t version) override;

    // The machine is stopping for good: a write blocked on a console nobody reads gives
    // up (its byte is dropped) when the vCPU is kicked, instead of being retried, so
    // ferry can exit. Until then a full console stalls the vCPU (no byte is lost).
    void abandon_output() { abandoned_ = true; }

private:
    uint8_t read_reg(uint64_t reg);
    void write_reg(uint64_t reg, uint8_t v);
    void emit(uint8_t byte);
    void update_irq();

    mutable std::mutex mu_;
    State s_;
    bool irq_level_ = false;
    int out_fd_;
    IrqFn irq_;
    std::atomic<bool> abandoned_{false};
};

}  // namespace ferry
