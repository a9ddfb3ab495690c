#include "migration/boot_stream.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "base/state_io.hpp"
#include "migration/stream.hpp"

namespace ferry {

namespace {
constexpr size_t kMaxCmdline = 64 * 1024;
constexpr size_t kMaxName = 4096;
constexpr size_t kMaxBlob = 512 * 1024;  // the VM or device power-on state

Result<void> send_image(Channel& ch, uint32_t instance, std::span<const uint8_t> bytes) {
    for (uint64_t off = 0; off < bytes.size(); off += kBootChunk) {
        auto piece = bytes.subspan(off, std::min<uint64_t>(kBootChunk, bytes.size() - off));
        std::span<const uint8_t> pieces[2] = {std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&off), sizeof(off)), piece};
        if (auto ok = send_section(ch, SectionKind::BootImage, instance, pieces); !ok) return ok;
    }
    return {};
}
}  // namespace

Result<void> send_boot_state(Channel& ch, const Machine::BootState& b) {
    StateWriter vcpus;
    vcpus.put(static_cast<uint32_t>(b.vcpus.size()));
    for (const auto& v : b.vcpus) {
        StateWriter one;
        v.save(one);
        vcpus.put_bytes(one.bytes());
    }
    StateWriter info;
    StateWriter vm;
    b.vm.save(vm);
    info.put_bytes(vm.bytes());
    info.put_bytes(b.devices);
    info.put_string(b.cmdline.substr(0, kMaxCmdline));
    info.put_string(b.kernel_name.substr(0, kMaxName));
    info.put(static_cast<uint64_t>(b.kernel.size()));
    info.put(static_cast<uint8_t>(b.initrd.has_value()));
    info.put(static_cast<uint64_t>(b.initrd ? b.initrd->size() : 0));
    info.put(static_cast<uint64_t>(vcpus.bytes().size()));
    if (auto ok = send_section(ch, SectionKind::BootInfo, 0, info.bytes()); !ok) return ok;
    if (auto ok = send_image(ch, kBootImageKernel, b.kernel); !ok) return ok;
    if (b.initrd)
        if (auto ok = send_image(ch, kBootImageInitrd, *b.initrd); !ok) return ok;
    return send_image(ch, kBootImageVcpus, vcpus.bytes());
}

Result<void> BootAssembler::on_info(std::span<const uint8_t> payload) {
    if (state_) return fail(Domain::Migration, "stream: a second boot-info section");
    auto s = std::make_shared<Machine::BootState>();
    StateReader r(payload);
    std::vector<uint8_t> vm;
    uint8_t has_initrd = 0;
    if (!r.get_bytes(vm, kMaxBlob) || !r.get_bytes(s->devices, kMaxBlob) || !r.get_string(s->cmdline, kMaxCmdline) ||
        !r.get_string(s->kernel_name, kMaxName) || !r.get(size_[kBootImageKernel]) || !r.get(has_initrd) ||
        !r.get(size_[kBootImageInitrd]) || !r.get(size_[kBootImageVcpus]) || !r.at_end() || has_initrd > 1)
        return fail(Domain::Migration, "stream: malformed boot-info section");
    StateReader vr(vm);
    auto vms = VmState::load(vr);
    if (!vms || !vr.at_end()) return fail(Domain::Migration, "stream: boot-info: bad VM power-on state");
    s->vm = *vms;
    for (uint64_t n : size_)
        if (n > max_image_)
            return fail(Domain::Migration, fmt::format("stream: boot-info: an image of {} bytes, more than this guest's RAM", n));
    if (size_[kBootImageKernel] == 0) return fail(Domain::Migration, "stream: boot-info: no kernel");
    if (has_initrd) s->initrd.emplace();
    else if (size_[kBootImageInitrd] != 0) return fail(Domain::Migration, "stream: boot-info: initrd bytes without an initrd");
    s->kernel.reserve(size_[kBootImageKernel]);
    state_ = std::move(s);
    return {};
}

Result<void> BootAssembler::on_image(uint32_t instance, std::span<const uint8_t> payload) {
    if (!state_) return fail(Domain::Migration, "stream: a boot-image section before boot-info");
    if (instance > kBootImageVcpus || (instance == kBootImageInitrd && !state_->initrd))
        return fail(Domain::Migration, fmt::format("stream: boot-image of unknown kind {}", instance));
    std::vector<uint8_t>& into = instance == kBootImageKernel ? state_->kernel
                                 : instance == kBootImageInitrd ? *state_->initrd
                                                                : vcpu_bytes_;
    uint64_t off = 0;
    if (payload.size() < sizeof(off)) return fail(Domain::Migration, "stream: boot-image section too short");
    std::memcpy(&off, payload.data(), sizeof(off));
    auto bytes = payload.subspan(sizeof(off));
    if (off != into.size() || bytes.size() > size_[instance] - into.size())
        return fail(Domain::Migration, "stream: boot-image chunk out of order or past its image's end");
    into.insert(into.end(), bytes.begin(), bytes.end());
    return {};
}

Result<std::shared_ptr<const Machine::BootState>> BootAssembler::take() {
    if (!state_) return fail(Domain::Migration, "no boot state came");
    if (state_->kernel.size() != size_[kBootImageKernel] || (state_->initrd && state_->initrd->size() != size_[kBootImageInitrd]) ||
        vcpu_bytes_.size() != size_[kBootImageVcpus])
        return fail(Domain::Migration, "stream: the boot images came incomplete");
    StateReader r(vcpu_bytes_);
    uint32_t n = 0;
    if (!r.get(n) || n != vcpus_) return fail(Domain::Migration, "stream: boot state for another vCPU count");
    for (uint32_t i = 0; i < n; ++i) {
        std::vector<uint8_t> blob;
        if (!r.get_bytes(blob, kMaxBlob)) return fail(Domain::Migration, "stream: malformed vCPU power-on state");
        StateReader one(blob);
        auto v = VcpuState::load(one);
        if (!v || !one.at_end()) return fail(Domain::Migration, fmt::format("stream: bad power-on state for vCPU {}", i));
        state_->vcpus.push_back(std::move(*v));
    }
    if (!r.at_end()) return fail(Domain::Migration, "stream: trailing bytes after the vCPU power-on states");
    return std::shared_ptr<const Machine::BootState>(std::move(state_));
}

}  // namespace ferry
