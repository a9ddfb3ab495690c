#include "base/event_loop.hpp"

#include <sys/epoll.h>

namespace ferry {

Result<EventLoop> EventLoop::create() {
    Fd ep(::epoll_create1(EPOLL_CLOEXEC));
    if (!ep.valid()) return fail_errno(Domain::Io, "epoll_create1");
    return EventLoop(std::move(ep));
}

Result<void> EventLoop::watch(int fd, uint32_t events, Callback cb) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    int op = callbacks_.count(fd) ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (::epoll_ctl(ep_.get(), op, fd, &ev) != 0) return fail_errno(Domain::Io, "epoll_ctl");
    callbacks_[fd] = std::move(cb);
    return {};
}

void EventLoop::unwatch(int fd) {
    if (callbacks_.erase(fd)) ::epoll_ctl(ep_.get(), EPOLL_CTL_DEL, fd, nullptr);
}

Result<void> EventLoop::run() {
    running_ = true;
    epoll_event events[32];
    while (running_) {
        int n = ::epoll_wait(ep_.get(), events, 32, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail_errno(Domain::Io, "epoll_wait");
        for (int i = 0; i < n && running_; ++i) {
            auto it = callbacks_.find(events[i].data.fd);
            if (it == callbacks_.end()) continue;
            Callback cb = it->second;  // a callback may unwatch itself
            cb(events[i].events);
        }
    }
    return {};
}

}  // namespace ferry
