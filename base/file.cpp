#include "base/file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fd.hpp"
#include "base/size.hpp"

namespace ferry {

Result<std::vector<uint8_t>> read_file(const std::string& path, uint64_t max_size, const std::string& what) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return fail_errno(Domain::Io, "cannot open " + what + " '" + path + "'");
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return fail_errno(Domain::Io, "cannot stat " + what + " '" + path + "'");
    if (!S_ISREG(st.st_mode)) return fail(Domain::Io, what + " '" + path + "' is not a regular file");
    if (static_cast<uint64_t>(st.st_size) > max_size)
        return fail(Domain::Io, what + " '" + path + "' is larger than " + format_size(max_size));
    std::vector<uint8_t> buf(static_cast<size_t>(st.st_size));
    size_t done = 0;
    while (done < buf.size()) {
        ssize_t n = ::read(fd.get(), buf.data() + done, buf.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail_errno(Domain::Io, "cannot read " + what + " '" + path + "'");
        if (n == 0) break;
        done += static_cast<size_t>(n);
    }
    buf.resize(done);
    return buf;
}

}  // namespace ferry
