// Two connected migration channels over a socketpair, for tests of what one peer sends
// the other (no network, no KVM).
#pragma once

#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <memory>

#include "migration/channel.hpp"

namespace ferry::test {

struct ChannelPair {
    std::unique_ptr<Channel> a, b;
    // buffer: bytes a may send before b reads (0: the kernel's default).
    explicit ChannelPair(int buffer = 0) {
        int sv[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        if (buffer) {
            ::setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &buffer, sizeof(buffer));
            ::setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &buffer, sizeof(buffer));
        }
        a = std::make_unique<Channel>(Fd(sv[0]));
        b = std::make_unique<Channel>(Fd(sv[1]));
    }
};

}  // namespace ferry::test
