#include "memory/residency.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include "base/fd.hpp"

namespace ferry {

namespace {
constexpr uint64_t kPage = 4096;
constexpr uint64_t kPagemapPresent = 1ull << 63;
constexpr uint64_t kPagemapSwapped = 1ull << 62;

void set_range(std::vector<uint64_t>& bits, uint64_t first, uint64_t count) {
    for (uint64_t p = first; p < first + count; ++p) bits[p / 64] |= 1ull << (p % 64);
}
}  // namespace

std::vector<uint64_t> backed_pages(const MemoryRegion& region, uint64_t first, uint64_t count) {
    uint64_t npages = region.size() / kPage;
    if (first > npages) first = npages;
    count = std::min(count, npages - first);
    std::vector<uint64_t> bits((count + 63) / 64, 0);
    auto all = [&] {
        std::fill(bits.begin(), bits.end(), ~0ull);
        return bits;
    };

    if (region.map.fd() >= 0) {
        int fd = region.map.fd();
        off_t pos = static_cast<off_t>(first * kPage), end = static_cast<off_t>((first + count) * kPage);
        while (pos < end) {
            off_t data = ::lseek(fd, pos, SEEK_DATA);
            if (data < 0) {
                if (errno == ENXIO) break;  // no data after pos
                return all();
            }
            if (data >= end) break;
            off_t hole = ::lseek(fd, data, SEEK_HOLE);
            if (hole < 0 || hole > end) hole = end;
            uint64_t a = static_cast<uint64_t>(data) / kPage, b = (static_cast<uint64_t>(hole) + kPage - 1) / kPage;
            set_range(bits, a - first, b - a);
            pos = hole;
        }
        return bits;
    }

    Fd pm(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
    if (!pm.valid()) return all();
    uint64_t vpage = reinterpret_cast<uint64_t>(region.map.addr()) / kPage + first;
    std::vector<uint64_t> entries(std::min<uint64_t>(count, 64 * 1024));
    for (uint64_t p = 0; p < count;) {
        uint64_t n = std::min<uint64_t>(entries.size(), count - p);
        ssize_t got = ::pread(pm.get(), entries.data(), n * 8, static_cast<off_t>((vpage + p) * 8));
        if (got != static_cast<ssize_t>(n * 8)) return all();
        for (uint64_t i = 0; i < n; ++i)
            if (entries[i] & (kPagemapPresent | kPagemapSwapped)) bits[(p + i) / 64] |= 1ull << ((p + i) % 64);
        p += n;
    }
    return bits;
}

}  // namespace ferry
