// SectionProxy (section_proxy.hpp).
#include "section_proxy.hpp"

#include <xxhash.h>

#include <catch2/catch.hpp>
#include <cstring>

namespace ferry::test {

using namespace std::chrono_literals;

SectionProxy::SectionProxy(uint16_t dst_port, Hook hook) : dst_port_(dst_port), hook_(std::move(hook)) {
    auto l = Listener::listen(TcpAddress{"127.0.0.1", 0});
    REQUIRE(l);
    listener_ = std::make_unique<Listener>(std::move(*l));
    thread_ = std::thread([this] { run(); });
}

SectionProxy::~SectionProxy() {
    stop_ = true;
    listener_->cancel();
    cut();
    if (thread_.joinable()) thread_.join();
    if (back_.joinable()) back_.join();
}

void SectionProxy::cut() {
    std::lock_guard lock(mu_);
    if (src_) src_->cancel();
    if (dst_) dst_->cancel();
}

// The section's bytes as send_section frames them: frame, payload, checksum.
std::vector<uint8_t> SectionProxy::framed(const Section& s) {
    struct __attribute__((packed)) Frame {
        uint16_t kind, version;
        uint32_t instance;
        uint64_t length;
    } f{static_cast<uint16_t>(s.kind), static_cast<uint16_t>(kStreamVersion), s.instance, s.payload.size()};
    std::vector<uint8_t> bytes(sizeof(f) + s.payload.size());
    std::memcpy(bytes.data(), &f, sizeof(f));
    if (!s.payload.empty()) std::memcpy(bytes.data() + sizeof(f), s.payload.data(), s.payload.size());
    uint64_t sum = XXH3_64bits(bytes.data(), bytes.size());
    bytes.insert(bytes.end(), reinterpret_cast<uint8_t*>(&sum), reinterpret_cast<uint8_t*>(&sum) + sizeof(sum));
    return bytes;
}

// The section with one byte flipped after its checksum was computed: in the payload's
// middle, or in the instance field when there is none.
bool SectionProxy::send_flipped(Channel& to, const Section& s) {
    auto bytes = framed(s);
    bytes[s.payload.empty() ? 4 : 16 + s.payload.size() / 2] ^= 0x01;
    return static_cast<bool>(to.send_all(bytes));
}

// The first half of the section's bytes, then nothing: the receiver holds part of a section.
void SectionProxy::send_half(Channel& to, const Section& s) {
    auto bytes = framed(s);
    bytes.resize(bytes.size() / 2);
    (void)to.send_all(bytes);
}

void SectionProxy::run() {
    auto s = listener_->accept();
    if (!s) return;
    auto d = Channel::connect(TcpAddress{"127.0.0.1", dst_port_}, 10s);
    if (!d) return;
    {
        std::lock_guard lock(mu_);
        src_ = std::make_unique<Channel>(std::move(*s));
        dst_ = std::make_unique<Channel>(std::move(*d));
        if (stop_) return;
    }
    back_ = std::thread([this] { pump(*dst_, *src_, Dir::ToSource); });
    pump(*src_, *dst_, Dir::ToDestination);
}

void SectionProxy::pump(Channel& from, Channel& to, Dir d) {
    for (;;) {
        auto sec = recv_section(from);
        if (!sec) {
            cut();  // one side went away: so does the other
            return;
        }
        (d == Dir::ToDestination ? to_dst_ : to_src_)++;
        switch (hook_(d, *sec)) {
            case Action::Forward:
                if (!send_section(to, sec->kind, sec->instance, sec->payload)) {
                    cut();
                    return;
                }
                break;
            case Action::Flip:
                if (!send_flipped(to, *sec)) {
                    cut();
                    return;
                }
                break;
            case Action::Drop: break;
            case Action::Cut: cut(); return;
            case Action::CutMidway:
                send_half(to, *sec);
                std::this_thread::sleep_for(100ms);  // let it arrive before the close
                cut();
                return;
            case Action::Stall:
                // Keep both connections open and forward nothing more this way.
                while (!stop_) std::this_thread::sleep_for(20ms);
                return;
        }
    }
}

}  // namespace ferry::test
