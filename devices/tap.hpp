// A host tap device (/dev/net/tun, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR), the backend of
// virtio-net. Frames cross it with a 12-byte virtio_net_hdr in front (TUNSETVNETHDRSZ
// 12, the virtio 1.x header with num_buffers), no offloads (TUNSETOFFLOAD 0).
//
// Opening by name attaches to an existing tap (made with `ip tuntap add NAME mode tap`,
// which lets an unprivileged owner attach) or, with CAP_NET_ADMIN, creates a
// non-persistent one that goes away with ferry; either way the host side brings the
// link up (`ip link set NAME up`) and connects it (bridge, address, ...).
#pragma once

#include <string>

#include "base/error.hpp"
#include "base/fd.hpp"

namespace ferry {

inline constexpr size_t kVnetHdrSize = 12;

class Tap {
public:
    static Result<Tap> open(const std::string& name);
    // An fd that already behaves as an open tap (non-blocking; each read and write one
    // frame behind its virtio_net_hdr): one end of a SOCK_SEQPACKET socketpair, for the
    // fuzzer (tests/fuzz/fuzz_net.cpp), which plays the host's side on the other end.
    static Tap adopt(Fd fd, std::string name) { return Tap(std::move(fd), std::move(name)); }

    int fd() const { return fd_.get(); }  // non-blocking
    const std::string& name() const { return name_; }

private:
    Tap(Fd fd, std::string name) : fd_(std::move(fd)), name_(std::move(name)) {}
    Fd fd_;
    std::string name_;
};

}  // namespace ferry
