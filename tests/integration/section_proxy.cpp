// SectionProxy (section_proxy.hpp).
#include "section_proxy.hpp"

#include <catch2/catch.hpp>

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
            case Action::Drop: break;
            case Action::Cut: cut(); return;
            case Action::Stall:
                // Keep both connections open and forward nothing more this way.
                while (!stop_) std::this_thread::sleep_for(20ms);
                return;
        }
    }
}

}  // namespace ferry::test
