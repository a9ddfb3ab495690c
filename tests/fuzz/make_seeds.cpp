// make-fuzz-seeds OUTDIR: writes the generated seed inputs of the fuzz targets
// (tests/fuzz/corpus/<target>/seed-*) into OUTDIR/<target>/: well-formed inputs in each
// target's layout (see the top of fuzz_<name>.cpp), built with the project's own
// writers where there is one (send_section, encode_header, the state savers).
//   ninja -C build tests/fuzz/make-fuzz-seeds && build/tests/fuzz/make-fuzz-seeds tests/fuzz/corpus
// The TOML seeds of fuzz_config and the QMP texts of fuzz_qmp are plain files kept by hand.
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/state_io.hpp"
#include "devices/virtio/blk.hpp"
#include "devices/rtc.hpp"
#include "devices/serial.hpp"
#include "devices/virtio/mmio.hpp"
#include "devices/virtio/net.hpp"
#include "devices/virtio/queue.hpp"
#include "migration/stream.hpp"
#include "migration/tls.hpp"
#include "tests/fuzz/fake_ram.hpp"
#include "tests/common/elf_builder.hpp"
#include "vmm/boot/acpi.hpp"
#include "vmm/cpu_state.hpp"
#include <asm/bootparam.h>

using namespace ferry;
using namespace ferry::fuzz;
using Bytes = std::vector<uint8_t>;

namespace {

std::filesystem::path out_dir;

void write(const std::string& target, const std::string& name, const Bytes& b) {
    auto dir = out_dir / target;
    std::filesystem::create_directories(dir);
    std::ofstream(dir / name, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

template <class T>
void append(Bytes& b, const T& v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    b.insert(b.end(), p, p + sizeof(T));
}

struct RawDesc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags, next;
};

// fuzz_virtqueue: flags, log2 size, avail idx, [state], table, ring, data at kData.
Bytes queue_input(uint8_t flags, uint8_t log2, uint16_t avail_idx, const std::vector<RawDesc>& table,
                  const std::vector<uint16_t>& ring, const Bytes& data, const virtio::QueueState* st = nullptr) {
    Bytes b{flags, log2};
    append(b, avail_idx);
    if (st) append(b, *st);
    const size_t size = st ? st->size : size_t{1} << log2;
    for (size_t i = 0; i < size; ++i) append(b, i < table.size() ? table[i] : RawDesc{});
    for (size_t i = 0; i < size; ++i) append(b, i < ring.size() ? ring[i] : uint16_t{0});
    b.insert(b.end(), data.begin(), data.end());
    return b;
}

void virtqueue_seeds() {
    using namespace virtio;
    const std::string t = "fuzz_virtqueue";
    // header, data, status: the shape of a virtio-blk request.
    write(t, "seed-chain", queue_input(0, 3, 1, {{0x4000, 16, kDescFNext, 1}, {0x5000, 512, kDescFNext | kDescFWrite, 2}, {0x6000, 1, kDescFWrite, 0}}, {0}, {}));
    // The same through an indirect table at kData.
    Bytes table;
    for (RawDesc d : {RawDesc{0x8000, 16, kDescFNext, 1}, RawDesc{0x20000, 512, kDescFNext | kDescFWrite, 2}, RawDesc{0xa000, 1, kDescFWrite, 0}})
        append(table, d);
    write(t, "seed-indirect", queue_input(1, 2, 1, {{kData, 48, kDescFIndirect, 0}}, {0}, table));
    // Four one-buffer chains, then the ring again (wrap-around).
    write(t, "seed-wrap", queue_input(4, 2, 4, {{0x4000, 64, 0, 0}, {0x5000, 64, kDescFWrite, 0}, {0x20000, 4096, 0, 0}, {0x2f000, 4096, kDescFWrite, 0}}, {0, 1, 2, 3}, {}));
    // A restored queue with two chains pending at indices 5 and 6.
    QueueState st{8, 1, 5, 5, kDesc, kAvail, kUsed};
    write(t, "seed-restore", queue_input(2, 3, 7, {{0x4000, 16, 0, 0}, {0x5000, 16, kDescFWrite, 0}}, {0, 0, 0, 0, 0, 1, 0, 0}, {}, &st));
    // Refused chains: a buffer crossing region 0's end, one in the hole, a loop.
    write(t, "seed-refused", queue_input(0, 2, 3, {{0xff00, 0x200, 0, 0}, {0x18000, 16, 0, 0}, {0x4000, 16, kDescFNext, 3}, {0x4000, 16, kDescFNext, 2}}, {0, 1, 2}, {}));
}

// Everything the source sends, as bytes: send_section into a socketpair, read back.
Bytes capture(const std::function<void(Channel&)>& send) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) throw std::runtime_error("socketpair");
    {
        Channel ch{Fd(sv[0])};
        send(ch);
    }
    Bytes out;
    uint8_t buf[65536];
    for (ssize_t n; (n = ::read(sv[1], buf, sizeof(buf))) > 0;) out.insert(out.end(), buf, buf + n);
    ::close(sv[1]);
    return out;
}

// fuzz_stream's input: the flags byte, then the stream.
Bytes with_flags(uint8_t flags, const Bytes& stream) {
    Bytes in(1 + stream.size(), flags);
    std::copy(stream.begin(), stream.end(), in.begin() + 1);
    return in;
}

void must(const Result<void>& r) {
    if (!r) throw std::runtime_error(r.error().message());
}

// The device-state record of one virtio-blk with a live queue, or nothing without io_uring.
Bytes device_state() {
    char path[] = "/tmp/ferry-fuzz-seed-XXXXXX";
    int fd = ::mkstemp(path);
    if (fd < 0 || ::ftruncate(fd, 64 * 512) != 0) return {};
    ::close(fd);
    auto blk = virtio::Blk::open("blk0", virtio::DiskSpec{path, false});
    ::unlink(path);
    if (!blk) return {};
    virtio::MmioTransport t(*blk, fake_ram(), [] {});
    auto reg = [&](uint64_t off, uint32_t v) { t.write(off, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v), 4)); };
    reg(0x070, 1 | 2);
    reg(0x024, 1);
    reg(0x020, 1);  // VERSION_1
    reg(0x070, 1 | 2 | 8);
    reg(0x030, 0);
    reg(0x038, 8);
    reg(0x080, kDesc);
    reg(0x090, kAvail);
    reg(0x0a0, kUsed);
    reg(0x044, 1);
    reg(0x070, 1 | 2 | 8 | 4);
    auto rec = save_record(t);
    if (!rec) return {};
    StateWriter w;
    put_record(w, *rec);
    return w.take();
}

// The 8250's and the RTC's records, each a device-state section's payload.
std::vector<Bytes> platform_records() {
    Serial s(-1, {});
    Rtc rtc(64 << 20, 0, 1, [] { return int64_t{1700000000}; });
    std::vector<Bytes> out;
    for (const SavedDevice* d : {static_cast<const SavedDevice*>(&s), static_cast<const SavedDevice*>(&rtc)}) {
        auto rec = save_record(*d);
        if (!rec) continue;
        StateWriter w;
        put_record(w, *rec);
        out.push_back(w.take());
    }
    return out;
}

void stream_seeds() {
    const std::string t = "fuzz_stream";
    StreamHeader h;
    h.cpus = 1;
    for (const auto& r : fake_ram().regions()) h.ram.push_back({r.start, r.size()});
    h.cpuid.push_back(kvm_cpuid_entry2{0, 0, 0, 0x16, 0x756e6547, 0x6c65746e, 0x49656e69, {}});
    Bytes ram;  // one data page at 0x1000, one zero page in region 1
    append(ram, uint32_t{2});
    append(ram, uint64_t{0x1000 | kPageFlagData});
    append(ram, uint64_t{kHighRegion | kPageFlagZero});
    ram.resize(ram.size() + kPageSize, 0x5a);
    VcpuState vcpu;
    vcpu.cpuid = h.cpuid;
    vcpu.regs.rip = 0x100000;
    vcpu.xsave.resize(4096);
    vcpu.msrs.push_back(kvm_msr_entry{kMsrIa32Tsc, 0, 123456789});
    StateWriter vw;
    vw.put(uint64_t{1});  // saved at (realtime ns)
    vcpu.save(vw);
    VmState vm;
    StateWriter mw;
    vm.save(mw);
    Bytes dev = device_state();
    auto empty = std::span<const uint8_t>();
    Bytes stream = capture([&](Channel& ch) {
        must(send_section(ch, SectionKind::Header, 0, encode_header(h)));
        must(send_section(ch, SectionKind::RamBatch, 0, ram));
        must(send_section(ch, SectionKind::Sync, 1, empty));
        must(send_section(ch, SectionKind::VcpuState, 0, vw.bytes()));
        must(send_section(ch, SectionKind::VmState, 0, mw.bytes()));
        uint32_t instance = 0;
        for (const Bytes& rec : platform_records()) must(send_section(ch, SectionKind::DeviceState, instance++, rec));
        if (!dev.empty()) must(send_section(ch, SectionKind::DeviceState, instance, dev));
        must(send_section(ch, SectionKind::StateEnd, 0, empty));
        must(send_section(ch, SectionKind::Go, 0, empty));
    });
    for (uint8_t flags : {0, 1 | 2, 4}) {  // as received / generic reads / expect_section
        write(t, "seed-stream-" + std::to_string(flags), with_flags(flags, stream));
    }
    write(t, "seed-error", with_flags(4, capture([](Channel& ch) { must(send_error(ch, "disk on fire")); })));
}

// fuzz_loaders: a mode byte, then a PVH ELF, a bzImage, a vmlinux or an ACPI config.
void loaders_seeds() {
    const std::string t = "fuzz_loaders";
    auto with_mode = [](uint8_t mode, Bytes b) {
        b.insert(b.begin(), mode);
        return b;
    };
    test::ElfBuilder pvh;
    write(t, "seed-pvh", with_mode(0, pvh.build()));
    write(t, "seed-detect-pvh", with_mode(3, pvh.build()));
    test::ElfBuilder plain;
    plain.with_note = false;
    write(t, "seed-vmlinux", with_mode(2, plain.build()));
    // A bzImage: 4 setup sectors + the boot sector, a protocol 2.15 header, 8 KiB of kernel.
    Bytes bz(5 * 512 + 0x2000, 0);
    setup_header h{};
    h.setup_sects = 4;
    h.syssize = 0x2000 / 16;
    h.boot_flag = 0xaa55;
    h.jump = 0x66eb;
    h.header = 0x53726448;
    h.version = 0x020f;
    h.loadflags = LOADED_HIGH;
    h.initrd_addr_max = 0x7fffffff;
    h.kernel_alignment = 0x200000;
    h.relocatable_kernel = 1;
    h.xloadflags = XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G;
    h.cmdline_size = 2047;
    h.pref_address = 0x1000000;
    h.init_size = 0x400000;
    std::memcpy(bz.data() + 0x1f1, &h, sizeof(h));
    write(t, "seed-bzimage", with_mode(1, bz));
    write(t, "seed-detect-bzimage", with_mode(3, bz));
    // ACPI: vCPUs, windows, then base (u32) and irq per window.
    Bytes acpi{2, 2};
    for (uint32_t i = 0; i < 2; ++i) {
        uint32_t base = 0xd0000000 + i * 0x1000;
        acpi.insert(acpi.end(), reinterpret_cast<uint8_t*>(&base), reinterpret_cast<uint8_t*>(&base) + 4);
        acpi.push_back(static_cast<uint8_t>(5 + i));
    }
    write(t, "seed-acpi", with_mode(4, acpi));
    write(t, "seed-acpi-max", with_mode(4, Bytes{254, 0}));
}

// fuzz_mmio: the register accesses of a driver that sets up queue 0 with one chain of a
// readable and a writable buffer, notifies it and acknowledges the interrupt.
void mmio_seeds() {
    Bytes out;
    auto access = [&](bool write, unsigned size_log2, uint16_t offset, uint32_t value, uint64_t ram = 0) {
        out.push_back(static_cast<uint8_t>((write ? 1 : 0) | size_log2 << 1));
        out.push_back(0);
        out.insert(out.end(), reinterpret_cast<uint8_t*>(&offset), reinterpret_cast<uint8_t*>(&offset) + 2);
        out.insert(out.end(), reinterpret_cast<uint8_t*>(&value), reinterpret_cast<uint8_t*>(&value) + 4);
        out.insert(out.end(), reinterpret_cast<uint8_t*>(&ram), reinterpret_cast<uint8_t*>(&ram) + 8);
    };
    auto poke = [&](uint64_t gpa, const Bytes& bytes) {  // RAM writes ride on harmless reads
        for (size_t i = 0; i < bytes.size(); ++i) access(false, 2, 0, 0, (gpa + i) | uint64_t{bytes[i]} << 32 | 1ull << 40);
    };
    auto le = [](uint64_t v, int n) {
        Bytes b;
        for (int i = 0; i < n; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
        return b;
    };
    for (uint16_t r : {0x000, 0x004, 0x008, 0x00c, 0x010}) access(false, 2, r, 0);
    access(true, 2, 0x070, 1);
    access(true, 2, 0x070, 3);
    access(true, 2, 0x024, 1);
    access(true, 2, 0x020, 1);  // VERSION_1 (bit 32)
    access(true, 2, 0x070, 11);
    access(true, 2, 0x030, 0);
    access(false, 2, 0x034, 0);
    access(true, 2, 0x038, 8);
    access(true, 2, 0x080, static_cast<uint32_t>(kDesc));
    access(true, 2, 0x084, 0);
    access(true, 2, 0x090, static_cast<uint32_t>(kAvail));
    access(true, 2, 0x0a0, static_cast<uint32_t>(kUsed));
    access(true, 2, 0x044, 1);
    access(true, 2, 0x070, 15);
    // Descriptor 0: 64 bytes at kData, NEXT -> 1; descriptor 1: 64 writable bytes.
    Bytes d0 = le(kData, 8), d1 = le(kData + 64, 8);
    for (auto b : le(64, 4)) d0.push_back(b);
    for (auto b : le(1, 2)) d0.push_back(b);  // NEXT
    for (auto b : le(1, 2)) d0.push_back(b);
    for (auto b : le(64, 4)) d1.push_back(b);
    for (auto b : le(2, 2)) d1.push_back(b);  // WRITE
    for (auto b : le(0, 2)) d1.push_back(b);
    poke(kDesc, d0);
    poke(kDesc + 16, d1);
    poke(kAvail + 4, le(0, 2));  // ring[0] = head 0
    poke(kAvail + 2, le(1, 2));  // idx = 1
    access(true, 2, 0x050, 0);   // notify
    access(false, 2, 0x060, 0);
    access(true, 2, 0x064, 1);
    access(false, 0, 0x100, 0);  // configuration space, a byte
    access(true, 3, 0x104, 0xdeadbeef);
    write("fuzz_mmio", "seed-driver", out);
}


// fuzz_net: flags, queue sizes, config offset, avail indices, the two queues' tables
// and rings, the tap's frames, then the bytes at 0x8000 (tests/fuzz/fuzz_net.cpp).
struct NetQueue {
    uint8_t log2 = 3;
    uint16_t avail_idx = 0;
    std::vector<RawDesc> table;
    std::vector<uint16_t> ring;
};

Bytes net_frame(size_t len, uint8_t fill) {  // behind a zero virtio_net_hdr, as a tap hands it over
    Bytes f(len, fill);
    for (size_t i = 0; i < kVnetHdrSize && i < len; ++i) f[i] = 0;
    for (size_t i = kVnetHdrSize; i < kVnetHdrSize + 6 && i < len; ++i) f[i] = 0xff;  // broadcast
    if (len > kVnetHdrSize + 13) f[kVnetHdrSize + 12] = 0x88, f[kVnetHdrSize + 13] = 0xb6;
    return f;
}

Bytes net_input(uint8_t flags, const NetQueue& rx, const NetQueue& tx, const std::vector<Bytes>& frames, const Bytes& data) {
    Bytes b{flags, rx.log2, tx.log2, 0};
    append(b, rx.avail_idx);
    append(b, tx.avail_idx);
    for (const NetQueue* q : {&rx, &tx}) {
        const size_t size = size_t{1} << q->log2;
        for (size_t i = 0; i < size; ++i) append(b, i < q->table.size() ? q->table[i] : RawDesc{});
        for (size_t i = 0; i < size; ++i) append(b, i < q->ring.size() ? q->ring[i] : uint16_t{0});
    }
    b.push_back(static_cast<uint8_t>(frames.size()));
    for (const Bytes& f : frames) {
        append(b, static_cast<uint16_t>(f.size()));
        b.insert(b.end(), f.begin(), f.end());
    }
    b.insert(b.end(), data.begin(), data.end());
    return b;
}

void net_seeds() {
    using namespace virtio;
    const std::string t = "fuzz_net";
    constexpr uint64_t kBuf = 0x8000;  // fuzz_net's buffers
    // Two receive chains (one buffer; the header split from the frame), two frames in;
    // two transmit chains (header + frame in two descriptors; all in one) out.
    NetQueue rx{3, 2, {{kBuf, 2048, kDescFWrite, 0}, {kBuf + 0x800, 12, kDescFNext | kDescFWrite, 2}, {kBuf + 0x1000, 2048, kDescFWrite, 0}}, {0, 1}};
    Bytes data(0x3000, 0);
    NetQueue tx{3, 2, {{kBuf + 0x2000, 12, kDescFNext, 1}, {kBuf + 0x2100, 60, 0, 0}, {kBuf + 0x2200, 12 + 1500, 0, 0}}, {0, 2}};
    auto txdata = data;
    for (size_t i = 0x2100; i < 0x2100 + 6; ++i) txdata[i] = 0xff;
    write(t, "seed-rx-tx", net_input(0, rx, tx, {net_frame(12 + 60, 0x11), net_frame(12 + 1500, 0x22)}, txdata));
    // The same with a dirty callback, both rings offered again (the frames wait for the
    // second round), the device restored from a migration.
    write(t, "seed-again-dirty", net_input(2 | 4 | 8, rx, tx, {net_frame(12 + 60, 1), net_frame(12 + 60, 2), net_frame(12 + 64, 3), net_frame(12 + 64, 4)}, txdata));
    // Indirect tables at 0x8000 (receive) and 0x8100 (transmit).
    Bytes ind;
    for (RawDesc d : {RawDesc{kBuf + 0x1000, 12, kDescFWrite | kDescFNext, 1}, RawDesc{0x20000, 4096, kDescFWrite, 0}}) append(ind, d);
    ind.resize(0x100, 0);
    for (RawDesc d : {RawDesc{kBuf + 0x2000, 12, kDescFNext, 1}, RawDesc{0x21000, 100, 0, 0}}) append(ind, d);
    write(t, "seed-indirect", net_input(1, NetQueue{2, 1, {{kBuf, 32, kDescFIndirect, 0}}, {0}},
                                         NetQueue{2, 1, {{kBuf + 0x100, 32, kDescFIndirect, 0}}, {0}}, {net_frame(12 + 100, 0x33)}, ind));
    // Refused: a receive chain too small for its frame, a frame shorter than an Ethernet
    // header, a transmit chain of writable buffers only, one too short to be a frame, a
    // buffer across region 0's end, an avail index too far ahead on receive.
    write(t, "seed-refused", net_input(0, NetQueue{2, 2, {{kBuf, 40, kDescFWrite, 0}, {0xff00, 0x200, kDescFWrite, 0}}, {0, 1}},
                                        NetQueue{2, 3, {{kBuf + 0x100, 100, kDescFWrite, 0}, {kBuf + 0x200, 20, 0, 0}, {0xfff0, 0x100, 0, 0}}, {0, 1, 2}},
                                        {net_frame(12 + 60, 0x44), net_frame(20, 0x55), net_frame(12 + 60, 0x66)}, {}));
    write(t, "seed-broken", net_input(0, NetQueue{1, 9, {{kBuf, 2048, kDescFWrite, 0}}, {0, 0}}, NetQueue{1, 0, {}, {}}, {net_frame(12 + 60, 0x77)}, {}));
}

// fuzz_state: the RTC's clock, the two states as Machine::save_devices writes them,
// then port accesses (op, value).
void state_seeds() {
    const std::string t = "fuzz_state";
    auto input = [](uint32_t clock, const Serial::State& s, const Rtc::State& r, const Bytes& accesses) {
        Bytes b;
        append(b, clock);
        StateWriter w;
        w.put_struct(s);
        w.put_struct(r);
        b.insert(b.end(), w.bytes().begin(), w.bytes().end());
        b.insert(b.end(), accesses.begin(), accesses.end());
        return b;
    };
    auto op = [](bool rtc, bool write, unsigned log2, unsigned offset) {
        return static_cast<uint8_t>((rtc ? 1 : 0) | (write ? 2 : 0) | log2 << 2 | offset << 4);
    };
    Rtc fresh(256ull << 20, 0, 1, [] { return int64_t{1700000000}; });
    const Rtc::State rtc = fresh.state();
    // A guest printing, then reading the time and NVRAM, then setting the clock.
    Serial::State s;
    s.ier = 2;
    s.thre_pending = 1;
    Bytes acc;
    for (uint8_t c : {'h', 'i', '\n'}) acc.insert(acc.end(), {op(false, true, 0, 0), c});
    acc.insert(acc.end(), {op(false, false, 0, 2), 0, op(false, false, 0, 5), 0, op(false, true, 0, 3), 0x80,  // DLAB
                           op(false, true, 0, 0), 0x01, op(false, false, 0, 1), 0, op(false, true, 0, 3), 0x03,
                           op(false, true, 0, 4), 0x1f, op(false, false, 0, 6), 0, op(false, true, 0, 7), 0x5a});
    for (uint8_t reg : {0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32, 0x0a, 0x0b, 0x0c, 0x0d, 0x17, 0x5f})
        acc.insert(acc.end(), {op(true, true, 0, 0), reg, op(true, false, 0, 1), 0});
    acc.insert(acc.end(), {op(true, true, 0, 0), 0x0b, op(true, true, 0, 1), 0x04,   // binary, 12-hour
                           op(true, true, 0, 0), 0x04, op(true, true, 0, 1), 0x8b,   // 11 pm
                           op(true, true, 0, 0), 0x32, op(true, true, 0, 1), 21,     // century
                           op(true, true, 0, 0), 0x09, op(true, true, 0, 1), 99, op(true, false, 0, 1), 0,
                           op(true, true, 3, 0), 0xff, op(true, false, 3, 1), 0});
    write(t, "seed-console-clock", input(1700000000, s, rtc, acc));
    // A restored clock far off (the largest offset allowed, and beyond it), DLAB set.
    Rtc::State far = rtc;
    far.offset_s = Rtc::kMaxOffsetS;
    far.index = 0x32;
    Serial::State dlab;
    dlab.lcr = 0x80;
    dlab.dll = 1;
    write(t, "seed-far-clock", input(0, dlab, far, acc));
    far.offset_s = -(int64_t{1} << 62);
    write(t, "seed-past-clock", input(0xffffffff, dlab, far, acc));
    // States Machine::restore_devices refuses (restored anyway by the harness).
    Serial::State bad;
    bad.thre_pending = 7;
    bad.ier = 0xff;
    Rtc::State bad_rtc = rtc;
    bad_rtc.index = 0xff;
    write(t, "seed-refused", input(1700000000, bad, bad_rtc, acc));
}

}  // namespace

// fuzz_tls: a client's first flight (its ClientHello, PSK binder included), caught on a
// socketpair from TlsSession::client, for each credential mode; and a plain migration
// header, what a source without TLS sends.
void tls_seeds() {
    auto dir = std::filesystem::temp_directory_path() / ("ferry-seeds-tls-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "keys.psk") << "ferry:00112233445566778899aabbccddeeff\n";
    auto creds = TlsCredentials::load_psk((dir / "keys.psk").string());
    if (!creds) throw std::runtime_error(creds.error().message());
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) throw std::runtime_error("socketpair");
    (void)TlsSession::client(TlsConfig{*creds, ""}, sv[0], "127.0.0.1", std::chrono::milliseconds(200));  // times out: no server
    Bytes hello(65536);
    ssize_t n = ::recv(sv[1], hello.data(), hello.size(), MSG_DONTWAIT);
    ::close(sv[0]);
    ::close(sv[1]);
    std::filesystem::remove_all(dir);
    if (n <= 0) throw std::runtime_error("no ClientHello");
    hello.resize(static_cast<size_t>(n));
    for (uint8_t mode : {0, 1, 2, 3}) {
        Bytes b{mode};
        b.insert(b.end(), hello.begin(), hello.end());
        write("fuzz_tls", "seed-clienthello-mode" + std::to_string(mode), b);
    }
    StreamHeader h;
    h.cpus = 1;
    for (const auto& r : fake_ram().regions()) h.ram.push_back({r.start, r.size()});
    Bytes plain{1};
    Bytes section = capture([&](Channel& ch) { must(send_section(ch, SectionKind::Header, 0, encode_header(h))); });
    plain.insert(plain.end(), section.begin(), section.end());
    write("fuzz_tls", "seed-plain-migration-header", plain);
}

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 2;
    }
    out_dir = argv[1];
    virtqueue_seeds();
    stream_seeds();
    loaders_seeds();
    mmio_seeds();
    net_seeds();
    state_seeds();
    tls_seeds();
    return 0;
}
