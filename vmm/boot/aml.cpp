#include "vmm/boot/aml.hpp"

#include <stdexcept>

namespace ferry::aml {

namespace {

void append(Bytes& out, const Bytes& b) { out.insert(out.end(), b.begin(), b.end()); }

void put_le(Bytes& out, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

bool name_char(char c, bool first) {
    return (c >= 'A' && c <= 'Z') || c == '_' || (!first && c >= '0' && c <= '9');
}

// An opcode (1 or 2 bytes), the PkgLength of what follows, then `body`.
Bytes wrap(std::initializer_list<uint8_t> op, const Bytes& body) {
    Bytes out(op);
    append(out, pkg_length(body.size()));
    append(out, body);
    return out;
}

}  // namespace

Bytes pkg_length(size_t payload) {
    // One byte holds lengths below 64 (bits 0-5); n bytes hold 4 + 8*(n-1) bits, the
    // first byte's top two bits saying how many follow.
    for (size_t n = 1; n <= 4; ++n) {
        const size_t total = payload + n;
        const size_t limit = n == 1 ? 64 : size_t{1} << (4 + 8 * (n - 1));
        if (total >= limit) continue;
        if (n == 1) return {static_cast<uint8_t>(total)};
        Bytes out{static_cast<uint8_t>(((n - 1) << 6) | (total & 0x0f))};
        for (size_t i = 1; i < n; ++i) out.push_back(static_cast<uint8_t>(total >> (4 + 8 * (i - 1))));
        return out;
    }
    throw std::length_error("AML package longer than 2^28 bytes");
}

Bytes name_string(std::string_view n) {
    Bytes out;
    if (!n.empty() && n.front() == '\\') {
        out.push_back(kRootChar);
        n.remove_prefix(1);
    }
    if (n.empty() || n.size() > 4) throw std::invalid_argument("AML name of 1 to 4 characters");
    for (size_t i = 0; i < n.size(); ++i)
        if (!name_char(n[i], i == 0)) throw std::invalid_argument("AML name character");
    for (size_t i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(i < n.size() ? n[i] : '_'));
    return out;
}

Bytes integer(uint64_t v) {
    if (v == 0) return {kZeroOp};
    if (v == 1) return {kOneOp};
    Bytes out;
    if (v <= 0xff) out.push_back(kBytePrefix), put_le(out, v, 1);
    else if (v <= 0xffff) out.push_back(kWordPrefix), put_le(out, v, 2);
    else if (v <= 0xffffffff) out.push_back(kDWordPrefix), put_le(out, v, 4);
    else out.push_back(kQWordPrefix), put_le(out, v, 8);
    return out;
}

Bytes string(std::string_view s) {
    Bytes out{kStringPrefix};
    for (char c : s) {
        if (c <= 0 || c > 0x7e) throw std::invalid_argument("AML strings are ASCII without NUL");
        out.push_back(static_cast<uint8_t>(c));
    }
    out.push_back(0);
    return out;
}

Bytes eisa_id(std::string_view id) {
    // Three letters in 5 bits each (A = 1), then four hex digits; stored big-endian,
    // so the DWord's bytes read back in that order.
    if (id.size() != 7) throw std::invalid_argument("EISA id of 7 characters");
    auto letter = [&](size_t i) {
        if (id[i] < 'A' || id[i] > 'Z') throw std::invalid_argument("EISA id vendor letter");
        return static_cast<uint32_t>(id[i] - 'A' + 1);
    };
    auto hex = [&](size_t i) {
        char c = id[i];
        if (c >= '0' && c <= '9') return static_cast<uint32_t>(c - '0');
        if (c >= 'A' && c <= 'F') return static_cast<uint32_t>(c - 'A' + 10);
        throw std::invalid_argument("EISA id product digit");
    };
    const uint32_t v = (letter(0) << 26) | (letter(1) << 21) | (letter(2) << 16) | (hex(3) << 12) | (hex(4) << 8) |
                       (hex(5) << 4) | hex(6);
    Bytes out{kDWordPrefix};
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
    return out;
}

Bytes name(std::string_view n, const Bytes& value) {
    Bytes out{kNameOp};
    append(out, name_string(n));
    append(out, value);
    return out;
}

Bytes package(const std::vector<Bytes>& elements) {
    if (elements.size() > 255) throw std::length_error("AML package of more than 255 elements");
    Bytes body{static_cast<uint8_t>(elements.size())};
    for (const auto& e : elements) append(body, e);
    return wrap({kPackageOp}, body);
}

Bytes buffer(const Bytes& data) {
    Bytes body = integer(data.size());
    append(body, data);
    return wrap({kBufferOp}, body);
}

Bytes scope(std::string_view n, const std::vector<Bytes>& terms) {
    Bytes body = name_string(n);
    for (const auto& t : terms) append(body, t);
    return wrap({kScopeOp}, body);
}

Bytes device(std::string_view n, const std::vector<Bytes>& terms) {
    Bytes body = name_string(n);
    for (const auto& t : terms) append(body, t);
    return wrap({kExtOpPrefix, kDeviceOp}, body);
}

Bytes resource_template(const std::vector<Bytes>& descriptors) {
    Bytes data;
    for (const auto& d : descriptors) append(data, d);
    // End tag (small item 0xf, length 1); checksum 0 means "the descriptors are not
    // summed" (§6.4.2.9).
    data.push_back(0x79);
    data.push_back(0x00);
    return buffer(data);
}

Bytes io_port(uint16_t base, uint8_t len) {
    // Small item 0x08, length 7: decode 16-bit, min, max, alignment, length.
    Bytes out{0x47, 0x01};
    put_le(out, base, 2);
    put_le(out, base, 2);
    out.push_back(0x01);
    out.push_back(len);
    return out;
}

Bytes irq_no_flags(uint8_t irq) {
    if (irq > 15) throw std::invalid_argument("an ISA IRQ is 0-15");
    // Small item 0x04, length 2: the IRQ mask (edge, active high: no flags byte).
    Bytes out{0x22};
    put_le(out, 1u << irq, 2);
    return out;
}

Bytes memory32_fixed(uint32_t base, uint32_t len) {
    // Large item 0x06, length 9: read-write, base, length.
    Bytes out{0x86, 0x09, 0x00, 0x01};
    put_le(out, base, 4);
    put_le(out, len, 4);
    return out;
}

Bytes interrupt_edge(uint32_t gsi) {
    // Large item 0x09, length 6: flags (bit 0 consumer, bit 1 edge, bit 2 active low,
    // bit 3 shared), one interrupt.
    Bytes out{0x89, 0x06, 0x00, 0x03, 0x01};
    put_le(out, gsi, 4);
    return out;
}

}  // namespace ferry::aml
