// fuzz_config: the `ferry run` configuration parsers on arbitrary text.
//   - the whole input as a TOML config: parse_run_config (toml++ and the key/type
//     mapping into RunArgs), merge_run_args both ways, then plan_run (every option's
//     validation, memory zones, --cpu models, --disk specs) on the result;
//   - the whole input as a size (base/size.hpp): a parsed size must survive
//     format_size and parsing again ("512 MiB" -> "512MiB");
//   - the whole input as a --disk spec (parse_disk_spec) and a --serial spec.
// Errors are expected; crashes, hangs, leaks, uncaught exceptions and broken round
// trips are not.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "cli/specs.hpp"
#include "base/size.hpp"
#include "cli/run_options.hpp"
#include "devices/virtio/blk.hpp"

using namespace ferry;

namespace {

void check_size(std::string_view text) {
    auto v = parse_size(text);
    if (!v) return;
    std::string f = format_size(*v);
    f.erase(f.find(' '), 1);
    auto again = parse_size(f);
    if (!again || *again != *v) __builtin_trap();
}

void check_config(std::string_view text) {
    auto args = parse_run_config(text, "fuzz.toml");
    if (!args) return;
    (void)plan_run(merge_run_args(*args, RunArgs{}));
    (void)plan_run(merge_run_args(RunArgs{}, *args));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string text(reinterpret_cast<const char*>(data), size);
    check_config(text);
    check_size(text);
    if (auto d = parse_disk_spec(text); d && d->path.empty()) __builtin_trap();
    (void)parse_serial(text);
    return 0;
}
