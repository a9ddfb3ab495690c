// The boot state on the wire (stream version 4): what a reset goes back to (the
// power-on capture and the kernel, initrd and command line it was loaded from,
// vmm/machine.hpp BootState), so that a migrated guest can be reset and reboot on its
// destination as it would on its source. The source sends it once, right after the
// header-ack: a boot-info section (the VM and device power-on state, the command line,
// the images' sizes), then boot-image sections of at most 1 MiB each, in order
// (instance: 0 the kernel, 1 the initrd, 2 the vCPUs' power-on states; payload: u64
// offset, then the bytes). The destination assembles them (BootAssembler), refusing a
// size over its guest RAM, a chunk out of order or past its image's end, and an image
// left incomplete; at restore its Machine takes the whole.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "base/error.hpp"
#include "migration/channel.hpp"
#include "vmm/machine.hpp"

namespace ferry {

inline constexpr uint32_t kBootImageKernel = 0;
inline constexpr uint32_t kBootImageInitrd = 1;
inline constexpr uint32_t kBootImageVcpus = 2;
inline constexpr size_t kBootChunk = 1 << 20;

Result<void> send_boot_state(Channel& ch, const Machine::BootState& b);

class BootAssembler {
public:
    // Images larger than `max_image` bytes are refused (a kernel or initrd larger than
    // guest RAM could never be loaded); the vCPU count must be `vcpus`.
    BootAssembler(uint64_t max_image, size_t vcpus) : max_image_(max_image), vcpus_(vcpus) {}
    Result<void> on_info(std::span<const uint8_t> payload);
    Result<void> on_image(uint32_t instance, std::span<const uint8_t> payload);
    bool started() const { return state_ != nullptr; }
    // The whole boot state, once every byte of every image is in.
    Result<std::shared_ptr<const Machine::BootState>> take();

private:
    uint64_t max_image_;
    size_t vcpus_;
    std::shared_ptr<Machine::BootState> state_;
    uint64_t size_[3] = {0, 0, 0};
    std::vector<uint8_t> vcpu_bytes_;
};

}  // namespace ferry
