// JsonStream: splits a QMP byte stream into top-level JSON texts, the way QEMU's
// JSON streamer does, without parsing them (nlohmann-json parses each text after).
//
//   bytes:  {"execute": "stop"}\r\n{"execute":\n "cont"} 42 foo ]
//   texts:  `{"execute": "stop"}`  `{"execute":\n "cont"}`  `42`  `foo`  `]`
//
// A text ends when the brackets it opened are closed (strings and escapes are
// tracked so that brackets inside strings do not count); a bare token at the top
// level ends at whitespace or a structural character; a stray closer or separator
// is a text of its own (the parser then reports it). Objects may span lines, and
// several may share a line. Limits, for untrusted input:
//  - a text still incomplete after `max_text` bytes makes feed() return TooLong:
//    the caller closes the connection (nothing bounds it otherwise);
//  - nesting deeper than `max_depth` yields one Nesting error item, then the rest
//    of that text is skipped (not buffered) until its brackets close.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace ferry {

class JsonStream {
public:
    struct Item {
        std::string text;      // one top-level JSON text, unparsed
        bool too_deep = false;  // the text was dropped: nesting over max_depth
    };
    enum class Status { Ok, TooLong };

    static constexpr size_t kDefaultMaxText = 64 * 1024;
    static constexpr size_t kDefaultMaxDepth = 1024;

    explicit JsonStream(size_t max_text = kDefaultMaxText, size_t max_depth = kDefaultMaxDepth)
        : max_text_(max_text), max_depth_(max_depth) {}

    // Appends every text completed by `bytes` to `out`. After TooLong the stream
    // is unusable (the connection is to be closed).
    Status feed(std::string_view bytes, std::vector<Item>& out);
    // Bytes held for a text not yet complete.
    size_t pending() const { return count_; }

private:
    enum class Mode { Between, Value, Token };
    void finish(std::vector<Item>& out);

    size_t max_text_, max_depth_;
    Mode mode_ = Mode::Between;
    std::string buf_;
    size_t count_ = 0;  // bytes of the current text, skipped ones included
    size_t depth_ = 0;
    bool in_string_ = false, escape_ = false, skipping_ = false;
};

}  // namespace ferry
