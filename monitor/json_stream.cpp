#include "monitor/json_stream.hpp"

namespace ferry {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }
// Characters that end a bare token and are texts of their own at the top level.
bool is_separator(char c) { return c == '}' || c == ']' || c == ',' || c == ':'; }
bool is_opener(char c) { return c == '{' || c == '[' || c == '"'; }

}  // namespace

void JsonStream::finish(std::vector<Item>& out) {
    if (!skipping_) out.push_back(Item{std::move(buf_), false});  // a skipped text was reported already
    buf_.clear();
    count_ = 0;
    depth_ = 0;
    in_string_ = escape_ = skipping_ = false;
    mode_ = Mode::Between;
}

JsonStream::Status JsonStream::feed(std::string_view bytes, std::vector<Item>& out) {
    for (size_t i = 0; i < bytes.size(); ++i) {
        char c = bytes[i];
        switch (mode_) {
            case Mode::Between:
                if (is_space(c)) continue;
                buf_.push_back(c);
                count_ = 1;
                if (c == '{' || c == '[') {
                    mode_ = Mode::Value;
                    depth_ = 1;
                } else if (c == '"') {
                    mode_ = Mode::Value;
                    depth_ = 0;
                    in_string_ = true;
                } else if (is_separator(c)) {
                    finish(out);  // a stray closer or separator: the parser reports it
                } else {
                    mode_ = Mode::Token;
                }
                break;
            case Mode::Token:
                if (is_space(c) || is_separator(c) || is_opener(c)) {
                    finish(out);
                    --i;  // the delimiter starts what follows
                    continue;
                }
                buf_.push_back(c);
                ++count_;
                break;
            case Mode::Value:
                ++count_;
                if (!skipping_) buf_.push_back(c);
                if (in_string_) {
                    if (escape_) {
                        escape_ = false;
                    } else if (c == '\\') {
                        escape_ = true;
                    } else if (c == '"') {
                        in_string_ = false;
                        if (depth_ == 0) finish(out);
                    } else if (static_cast<unsigned char>(c) < 0x20 && !skipping_) {
                        finish(out);  // a raw control character never belongs in a string: report now
                    }
                } else if (c == '"') {
                    in_string_ = true;
                } else if (c == '{' || c == '[') {
                    if (++depth_ > max_depth_ && !skipping_) {
                        out.push_back(Item{{}, true});
                        buf_.clear();
                        skipping_ = true;
                    }
                } else if (c == '}' || c == ']') {
                    if (--depth_ == 0) finish(out);
                }
                break;
        }
        if (count_ > max_text_) return Status::TooLong;
    }
    return Status::Ok;
}

}  // namespace ferry
