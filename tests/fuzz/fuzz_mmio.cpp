// fuzz_mmio: the virtio-mmio register file (devices/virtio/mmio.cpp) driven by a
// hostile driver. The input is a list of register accesses on one transport whose
// device is a fake with two queues and a 16-byte configuration space; the fake serves
// a notified queue by popping every chain and completing it with its writable length,
// as a real device does, so the rings it reads live in the fake guest RAM
// (fake_ram.hpp) and are as hostile as the accesses. After the accesses, save_record()
// and load_record() round-trip the transport's record into a second transport.
//
// Each access is 16 bytes:
//   u8  op:     bit 0: 0 read, 1 write; bits 1-2: size 1, 2, 4 or 8
//   u8  -
//   u16 offset  (taken mod 0x200: the registers and the configuration space)
//   u32 value   (for writes; addresses written to QueueDesc/Driver/Device point into
//                the fake RAM when the driver picks them from the input)
//   u64 ram     one byte of fake RAM to set first: bits 0-17 address (mod 0x30000,
//               outside the hole), bits 32-39 value; 0 leaves RAM alone
// Crashes, hangs, sanitizer reports and a saved state that does not restore are bugs.
#include <cstddef>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <memory>

#include "base/state_io.hpp"
#include "devices/virtio/mmio.hpp"
#include "fake_ram.hpp"

using namespace ferry;
using namespace ferry::virtio;

namespace {

class FakeDevice : public VirtioDevice {
public:
    std::string id() const override { return "fuzz0"; }
    uint32_t device_type() const override { return 2; }
    uint64_t features() const override { return kFVersion1 | kFRingIndirectDesc | 1; }
    uint16_t num_queues() const override { return 2; }
    uint16_t queue_max_size() const override { return 64; }
    void read_config(uint64_t offset, std::span<uint8_t> data) const override {
        for (size_t i = 0; i < data.size(); ++i) data[i] = offset + i < sizeof(config_) ? config_[offset + i] : 0;
    }
    void write_config(uint64_t offset, std::span<const uint8_t> data) override {
        for (size_t i = 0; i < data.size(); ++i)
            if (offset + i < sizeof(config_)) config_[offset + i] = data[i];
    }
    void activate(DeviceContext ctx) override { ctx_ = std::move(ctx); active_ = true; }
    void notify(uint16_t q) override {
        if (!active_ || !ctx_.queues || q >= ctx_.queues->size()) return;
        auto& queue = (*ctx_.queues)[q];
        for (int n = 0; n < 256; ++n) {  // a guest can keep a ring "full" forever: bound it
            auto chain = queue.pop(*ctx_.mem);
            if (!chain || !*chain) return;
            const uint32_t len = (*chain)->error ? 0 : (*chain)->writable;
            if (!queue.add_used(*ctx_.mem, (*chain)->head, len, ctx_.dirty)) return;
            if (ctx_.signal) ctx_.signal(q);
        }
    }
    void reset() override { active_ = false; ctx_ = {}; }
    void drain() override {}
    void save_state(StateWriter& w) const override { w.put_bytes(std::span<const uint8_t>(config_, sizeof(config_))); }
    Result<void> restore_state(StateReader& r) override {
        std::vector<uint8_t> c;
        if (!r.get_bytes(c, sizeof(config_)) || c.size() != sizeof(config_)) return fail(Domain::Device, "fake config");
        std::memcpy(config_, c.data(), sizeof(config_));
        return {};
    }

private:
    uint8_t config_[16] = {};
    DeviceContext ctx_;
    bool active_ = false;
};

template <class T>
T take(const uint8_t* p) {
    T v;
    std::memcpy(&v, p, sizeof(T));
    return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    fuzz::clear_fake_ram();
    const GuestMemory& mem = fuzz::fake_ram();
    auto dev = std::make_shared<FakeDevice>();
    uint64_t irqs = 0;
    MmioTransport t(dev, mem, [&irqs] { ++irqs; });
    for (size_t at = 0; at + 16 <= size && at < 16 * 4096; at += 16) {
        const uint8_t op = data[at];
        const uint64_t offset = take<uint16_t>(data + at + 2) % 0x200;
        const uint32_t value = take<uint32_t>(data + at + 4);
        const uint64_t ram = take<uint64_t>(data + at + 8);
        if (ram) {
            uint64_t a = (ram & 0x3ffff) % 0x30000;
            if (a >= fuzz::kRegionSize && a < fuzz::kHighRegion) a -= fuzz::kRegionSize;
            auto s = mem.slice(Gpa(a), 1);
            if (s) (*s)[0] = static_cast<uint8_t>(ram >> 32);
        }
        const size_t len = size_t{1} << ((op >> 1) & 3);
        uint8_t buf[8] = {};
        if (op & 1) {
            std::memcpy(buf, &value, 4);
            t.write(offset, std::span<const uint8_t>(buf, len));
        } else {
            t.read(offset, std::span<uint8_t>(buf, len));
        }
    }
    // The record a migration would carry must load into a fresh transport.
    auto rec = save_record(t);
    if (!rec) __builtin_trap();
    MmioTransport again(std::make_shared<FakeDevice>(), mem, [] {});
    if (auto ok = load_record(again, *rec); !ok) {
        std::fprintf(stderr, "fuzz_mmio: a saved state does not restore: %s\n", ok.error().message().c_str());
        __builtin_trap();
    }
    return 0;
}
