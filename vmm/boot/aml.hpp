// A small encoder for the ACPI Machine Language that ferry's DSDT needs (ACPI 6.4 §20:
// "ACPI Machine Language (AML) Specification"): names, integers, strings, packages,
// buffers, scopes and devices, and the resource descriptors of a _CRS (§6.4: I/O port,
// IRQ, 32-bit fixed memory, extended interrupt). Objects are built bottom-up as byte
// vectors; a Scope, Device or Package wraps what it contains with its PkgLength.
//
// Only static data is encoded: ferry's DSDT has no methods, so the guest's AML
// interpreter evaluates nothing ferry computes at run time.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::aml {

using Bytes = std::vector<uint8_t>;

// Opcodes (§20.3).
inline constexpr uint8_t kZeroOp = 0x00, kOneOp = 0x01, kNameOp = 0x08, kBytePrefix = 0x0a, kWordPrefix = 0x0b,
                         kDWordPrefix = 0x0c, kStringPrefix = 0x0d, kQWordPrefix = 0x0e, kScopeOp = 0x10,
                         kBufferOp = 0x11, kPackageOp = 0x12, kExtOpPrefix = 0x5b, kDeviceOp = 0x82, kRootChar = 0x5c;

// The PkgLength encoding of a package whose contents (after the PkgLength) are
// `payload` bytes long: 1 to 4 bytes, and the length it encodes counts itself.
Bytes pkg_length(size_t payload);

// A NameSeg ("_S5" becomes "_S5_"), with a leading '\' kept as the root prefix:
// "\\_SB" is the root scope's _SB_. Names have 1 to 4 characters of A-Z, 0-9, _.
Bytes name_string(std::string_view name);

Bytes integer(uint64_t v);          // ZeroOp, OneOp or the shortest prefix that holds it
Bytes string(std::string_view s);   // StringPrefix, the ASCII bytes, NUL
Bytes eisa_id(std::string_view id);  // "PNP0501" as the compressed 32-bit EISA id

Bytes name(std::string_view n, const Bytes& value);          // Name (n, value)
Bytes package(const std::vector<Bytes>& elements);           // Package () {...}
Bytes buffer(const Bytes& data);                             // Buffer () {...}
Bytes scope(std::string_view n, const std::vector<Bytes>& terms);   // Scope (n) {...}
Bytes device(std::string_view n, const std::vector<Bytes>& terms);  // Device (n) {...}

// ResourceTemplate () {...}: the descriptors, the end tag, as a Buffer.
Bytes resource_template(const std::vector<Bytes>& descriptors);
// IO (Decode16, base, base, 1, len): a fixed range of I/O ports.
Bytes io_port(uint16_t base, uint8_t len);
// IRQNoFlags () {irq}: an ISA IRQ (0-15), edge-triggered, active high.
Bytes irq_no_flags(uint8_t irq);
// Memory32Fixed (ReadWrite, base, len).
Bytes memory32_fixed(uint32_t base, uint32_t len);
// Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) {gsi}.
Bytes interrupt_edge(uint32_t gsi);

}  // namespace ferry::aml
