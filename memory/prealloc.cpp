#include "memory/prealloc.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <fmt/format.h>
#include <memory>

#include "base/size.hpp"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace ferry {

namespace {

// Touches every 4 KiB page of [p, p+len) for writing. Only for fresh memory.
void touch_pages(uint8_t* p, uint64_t len) {
    for (uint64_t off = 0; off < len; off += 4096) {
        // SAFETY: the range lies inside the region's own mapping; writing back the value
        // just read leaves the (fresh, unwritten) content unchanged.
        volatile uint8_t* b = p + off;
        *b = *b;
    }
}

}  // namespace

Result<void> prealloc(const MmapRegion& region, const PreallocChunkFn& on_chunk) {
    bool populate = true;
    for (uint64_t off = 0; off < region.size();) {
        uint64_t len = std::min(kPreallocChunk, region.size() - off);
        uint8_t* p = region.addr() + off;
        if (populate && ::madvise(p, len, MADV_POPULATE_WRITE) != 0) {
            int e = errno;
            if (e == EINTR || e == EAGAIN) continue;  // retry the chunk
            if (e == EINVAL && region.backend() != Backend::Hugetlbfs) {
                populate = false;  // kernel before 5.14: touch instead
            } else {
                std::string what = fmt::format("preallocating guest RAM: the host could not populate {:#x}+{:#x} "
                                               "({} of {} done)",
                                               off, len, format_size(off), format_size(region.size()));
                if (e == ENOMEM && region.backend() == Backend::Hugetlbfs)
                    what += " — the hugetlb pool is exhausted (/proc/sys/vm/nr_hugepages)";
                return fail(Domain::Memory, what, e);
            }
        }
        if (!populate) touch_pages(p, len);
        off += len;
        if (on_chunk) on_chunk(len);
    }
    return {};
}

PreallocProgressFn prealloc_progress_printer(int fd) {
    struct State {
        int fd;
        bool tty;
        int last_shown = -1;
        std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
    };
    auto st = std::make_shared<State>(State{fd, ::isatty(fd) == 1});
    return [st](uint64_t done, uint64_t total) {
        if (total == 0) return;
        int pct = static_cast<int>(done * 100 / total);
        std::string line;
        if (st->tty) {
            if (pct == st->last_shown) return;
            line = fmt::format("\rferry: preallocating {} of guest RAM: {:3}%", format_size(total), pct);
        } else {
            int step = pct / 25 * 25;  // 0, 25, 50, 75, 100
            if (step == st->last_shown || (done != total && step == 100)) return;
            pct = step;
            line = fmt::format("ferry: preallocating {} of guest RAM: {}%\n", format_size(total), pct);
        }
        st->last_shown = pct;
        if (done == total) {
            double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - st->start).count();
            if (st->tty) line += "\n";
            line += fmt::format("ferry: preallocated {} of guest RAM in {:.2f} s\n", format_size(total), s);
        }
        [[maybe_unused]] ssize_t n = ::write(st->fd, line.data(), line.size());
    };
}

}  // namespace ferry
