// The PIO and MMIO buses: address ranges mapped to devices. Built once while the
// machine is set up, then read-only, so vCPU threads dispatch without a lock; each
// device serialises its own state.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>

#include "base/error.hpp"

namespace ferry {

// Something that answers reads and writes in an address range. `offset` is relative
// to the start of the range the device was registered at. Calls come from vCPU
// threads with guest-chosen offsets and sizes: devices must bounds-check both.
class BusDevice {
public:
    virtual ~BusDevice() = default;
    virtual std::string id() const = 0;
    virtual void read(uint64_t offset, std::span<uint8_t> data) = 0;
    virtual void write(uint64_t offset, std::span<const uint8_t> data) = 0;
};

class Bus {
public:
    explicit Bus(std::string name) : name_(std::move(name)) {}
    // Registers [base, base+len) -> device; refuses overlaps and empty ranges.
    Result<void> add(uint64_t base, uint64_t len, std::shared_ptr<BusDevice> dev);

    // Returns false when nothing is mapped at `addr` (then reads fill 0xff).
    bool read(uint64_t addr, std::span<uint8_t> data) const;
    bool write(uint64_t addr, std::span<const uint8_t> data) const;

private:
    struct Entry {
        uint64_t len;
        std::shared_ptr<BusDevice> dev;
    };
    const std::pair<const uint64_t, Entry>* find(uint64_t addr, uint64_t len) const;

    std::string name_;
    std::map<uint64_t, Entry> ranges_;  // keyed by base
};

}  // namespace ferry
