#include "devices/tap.hpp"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>

namespace ferry {

Result<Tap> Tap::open(const std::string& name) {
    if (name.empty() || name.size() >= IFNAMSIZ || name.find('/') != std::string::npos)
        return fail_config(ConfigItem::Net, fmt::format("tap:{}: a tap name has 1 to {} characters and no '/'", name, IFNAMSIZ - 1));
    Fd fd(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
    if (!fd.valid()) {
        int e = errno;
        return fail_config(ConfigItem::Net,
                           fmt::format("tap:{}: cannot open /dev/net/tun: {}{}", name, std::strerror(e),
                                e == ENOENT ? " (load the tun module: modprobe tun)" : ""));
    }
    ifreq ifr{};
    std::memcpy(ifr.ifr_name, name.data(), name.size());
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (::ioctl(fd.get(), TUNSETIFF, &ifr) != 0) {
        int e = errno;
        std::string hint;
        if (e == EPERM) hint = fmt::format(" (create it for this user first: ip tuntap add {} mode tap user $USER)", name);
        else if (e == EBUSY) hint = " (another process has it open, or it is a tun or multi-queue device)";
        else if (e == EINVAL) hint = " (an interface of that name exists and is not a tap)";
        return fail_config(ConfigItem::Net, fmt::format("tap:{}: TUNSETIFF: {}{}", name, std::strerror(e), hint));
    }
    int hdr = static_cast<int>(kVnetHdrSize);
    if (::ioctl(fd.get(), TUNSETVNETHDRSZ, &hdr) != 0) return fail_config(ConfigItem::Net, fmt::format("tap:{}: TUNSETVNETHDRSZ", name), errno);
    if (::ioctl(fd.get(), TUNSETOFFLOAD, 0u) != 0) return fail_config(ConfigItem::Net, fmt::format("tap:{}: TUNSETOFFLOAD", name), errno);
    return Tap(std::move(fd), ifr.ifr_name);
}

}  // namespace ferry
