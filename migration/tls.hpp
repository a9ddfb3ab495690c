// TLS 1.3 for the migration connections, with OpenSSL 3 (docs/security.md says why).
//
// Credentials are loaded once, at setup (before the privilege drop and seccomp):
//   - X.509, in QEMU's layout of a directory: ca-cert.pem, and server-cert.pem +
//     server-key.pem (to receive a migration) and/or client-cert.pem + client-key.pem
//     (to send one). Both ends check the other's certificate against the CA; the
//     client also checks that the server's certificate names the host it dialled (a
//     DNS name or an IP address in subjectAltName);
//   - a pre-shared key, in QEMU's keys.psk format: lines of IDENTITY:HEXKEY. A client
//     uses the first line; a server accepts any identity the file lists.
// `authz` (optional, on the server) names the only client let in: its certificate's
// subject CN or whole RFC 2253 DN, or its PSK identity.
//
// A TlsSession wraps one connected socket after the handshake. Its socket is
// non-blocking; a sender and a receiver on different threads take turns on the
// OpenSSL object under one lock, and wait for the socket outside it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "base/error.hpp"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

namespace ferry {

class TlsCredentials {
public:
    // `need_server` / `need_client`: the files that role needs must be there.
    static Result<std::shared_ptr<const TlsCredentials>> load_x509(const std::string& dir, bool need_server, bool need_client);
    static Result<std::shared_ptr<const TlsCredentials>> load_psk(const std::string& file);
    ~TlsCredentials();
    TlsCredentials(const TlsCredentials&) = delete;
    TlsCredentials& operator=(const TlsCredentials&) = delete;

    bool can_serve() const { return server_ != nullptr; }
    bool can_connect() const { return client_ != nullptr; }
    bool psk() const { return !keys_.empty(); }
    std::string describe() const;  // "x509 DIR" / "psk FILE"

private:
    friend class TlsSession;
    struct Key {
        std::string identity;
        std::vector<uint8_t> key;
    };
    TlsCredentials() = default;
    const Key* find_key(std::string_view identity) const;

    std::string origin_;
    SSL_CTX* server_ = nullptr;
    SSL_CTX* client_ = nullptr;
    std::vector<Key> keys_;
};

// What a migration uses: the credentials, and the client the server lets in ("" = any
// the credentials accept).
struct TlsConfig {
    std::shared_ptr<const TlsCredentials> creds;
    std::string authz;
};

class TlsSession {
public:
    // The handshake on a connected socket (made non-blocking here), within `timeout`.
    // A client checks the server's certificate against `host`.
    static Result<std::unique_ptr<TlsSession>> client(const TlsConfig& cfg, int fd, const std::string& host,
                                                      std::chrono::milliseconds timeout);
    static Result<std::unique_ptr<TlsSession>> server(const TlsConfig& cfg, int fd, std::chrono::milliseconds timeout);
    ~TlsSession();
    TlsSession(const TlsSession&) = delete;
    TlsSession& operator=(const TlsSession&) = delete;

    // Writes all of `data`; `timeout` zero waits as long as it takes.
    Result<void> write_all(std::span<const uint8_t> data, std::chrono::milliseconds timeout);
    // Reads exactly `out.size()` bytes.
    Result<void> read_exact(std::span<uint8_t> out, std::chrono::milliseconds timeout);
    // Decrypted bytes are waiting (a poll on the socket would not show them).
    bool pending() const;
    std::string cipher() const;

private:
    friend class TlsCredentials;
    TlsSession(SSL* ssl, int fd);
    Result<void> handshake(bool is_server, std::chrono::milliseconds timeout);

    SSL* ssl_;
    int fd_;
    std::string psk_identity_;  // the identity a server's PSK callback accepted
    mutable std::mutex mu_;
};

}  // namespace ferry
