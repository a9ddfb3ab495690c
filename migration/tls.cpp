#include "migration/tls.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <algorithm>
#include <cstring>
#include <fstream>
#include <optional>

#include <fmt/format.h>

namespace ferry {

namespace {

// OpenSSL's queued errors as one line (and the queue emptied).
std::string ssl_errors() {
    std::string out;
    while (unsigned long e = ERR_get_error()) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof(buf));
        if (!out.empty()) out += "; ";
        out += buf;
    }
    return out.empty() ? "no detail from OpenSSL" : out;
}

Error tls_error(const std::string& what) { return Error{Domain::Migration, 0, what + ": " + ssl_errors()}; }

SSL_CTX* new_ctx(bool server) {
    SSL_CTX* ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!ctx) return nullptr;
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (server) SSL_CTX_set_num_tickets(ctx, 0);  // no resumption: one handshake per connection
    return ctx;
}

bool readable_file(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// A certificate and its key for one role, both checked against the CA.
Result<SSL_CTX*> x509_ctx(const std::string& dir, bool server) {
    const std::string role = server ? "server" : "client";
    const std::string cert = dir + "/" + role + "-cert.pem", key = dir + "/" + role + "-key.pem", ca = dir + "/ca-cert.pem";
    SSL_CTX* ctx = new_ctx(server);
    if (!ctx) return std::unexpected(tls_error("SSL_CTX_new"));
    auto fail_with = [&](const std::string& what) -> Result<SSL_CTX*> {
        auto e = tls_error(what);
        SSL_CTX_free(ctx);
        return std::unexpected(e);
    };
    if (SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr) != 1) return fail_with("cannot load the CA " + ca);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1) return fail_with("cannot load " + cert);
    if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1) return fail_with("cannot load " + key);
    if (SSL_CTX_check_private_key(ctx) != 1) return fail_with(key + " is not the key of " + cert);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), nullptr);
    return ctx;
}

std::optional<std::vector<uint8_t>> parse_hex(std::string_view s) {
    if (s.empty() || s.size() % 2) return std::nullopt;
    std::vector<uint8_t> out;
    for (size_t i = 0; i < s.size(); i += 2) {
        auto nib = [](char c) -> int {
            if (c >= '0' && c <= '9') return c - '0';
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        };
        int hi = nib(s[i]), lo = nib(s[i + 1]);
        if (hi < 0 || lo < 0) return std::nullopt;
        out.push_back(static_cast<uint8_t>(hi << 4 | lo));
    }
    return out;
}

constexpr int kCredsIndex = 0;  // SSL_CTX app data: the TlsCredentials

}  // namespace

TlsCredentials::~TlsCredentials() {
    SSL_CTX_free(server_);
    SSL_CTX_free(client_);
    for (auto& k : keys_) OPENSSL_cleanse(k.key.data(), k.key.size());
}

std::string TlsCredentials::describe() const { return origin_; }

const TlsCredentials::Key* TlsCredentials::find_key(std::string_view identity) const {
    for (const auto& k : keys_)
        if (k.identity == identity) return &k;
    return nullptr;
}

Result<std::shared_ptr<const TlsCredentials>> TlsCredentials::load_x509(const std::string& dir, bool need_server, bool need_client) {
    std::shared_ptr<TlsCredentials> c(new TlsCredentials());
    c->origin_ = "x509 " + dir;
    if (!readable_file(dir + "/ca-cert.pem"))
        return fail_config(ConfigItem::TlsCreds, fmt::format("{}: no ca-cert.pem there (QEMU's layout: ca-cert.pem, "
                                                "server-cert.pem, server-key.pem, client-cert.pem, client-key.pem)", dir));
    for (bool server : {true, false}) {
        const std::string role = server ? "server" : "client";
        bool present = readable_file(dir + "/" + role + "-cert.pem") || readable_file(dir + "/" + role + "-key.pem");
        bool needed = server ? need_server : need_client;
        if (!present && !needed) continue;
        auto ctx = x509_ctx(dir, server);
        if (!ctx) return fail_config(ConfigItem::TlsCreds, fmt::format("{}: {}", dir, ctx.error().message()));
        (server ? c->server_ : c->client_) = *ctx;
    }
    return std::shared_ptr<const TlsCredentials>(std::move(c));
}

Result<std::shared_ptr<const TlsCredentials>> TlsCredentials::load_psk(const std::string& file) {
    std::shared_ptr<TlsCredentials> c(new TlsCredentials());
    c->origin_ = "psk " + file;
    std::ifstream in(file);
    if (!in) return fail_config(ConfigItem::TlsPsk, file, errno);
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
        if (line.empty() || line[0] == '#') continue;
        auto colon = line.find(':');
        auto key = colon == std::string::npos ? std::nullopt : parse_hex(line.substr(colon + 1));
        if (colon == 0 || !key || key->size() < 16 || key->size() > PSK_MAX_PSK_LEN || colon > 128)
            return fail_config(ConfigItem::TlsPsk, fmt::format("{}:{}: expected IDENTITY:HEXKEY, a key of 16 to {} bytes "
                                                    "(e.g. `echo ferry:$(openssl rand -hex 32)`)", file, n, PSK_MAX_PSK_LEN));
        c->keys_.push_back({line.substr(0, colon), std::move(*key)});
    }
    if (c->keys_.empty()) return fail_config(ConfigItem::TlsPsk, fmt::format("{}: no IDENTITY:HEXKEY line", file));
    c->server_ = new_ctx(true);
    c->client_ = new_ctx(false);
    if (!c->server_ || !c->client_) return std::unexpected(tls_error("SSL_CTX_new"));
    for (SSL_CTX* ctx : {c->server_, c->client_}) SSL_CTX_set_ex_data(ctx, kCredsIndex, c.get());
    // TLS 1.3 takes these callbacks' keys as external PSKs for SHA-256 suites
    // (TLS_AES_128_GCM_SHA256 and TLS_CHACHA20_POLY1305_SHA256), with (EC)DHE.
    SSL_CTX_set_psk_client_callback(c->client_, [](SSL* ssl, const char*, char* identity, unsigned max_id, unsigned char* psk,
                                                   unsigned max_psk) -> unsigned {
        auto* self = static_cast<const TlsCredentials*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), kCredsIndex));
        const Key& k = self->keys_.front();
        if (k.identity.size() + 1 > max_id || k.key.size() > max_psk) return 0;
        std::memcpy(identity, k.identity.c_str(), k.identity.size() + 1);
        std::memcpy(psk, k.key.data(), k.key.size());
        return static_cast<unsigned>(k.key.size());
    });
    SSL_CTX_set_psk_server_callback(c->server_, [](SSL* ssl, const char* identity, unsigned char* psk, unsigned max_psk) -> unsigned {
        auto* self = static_cast<const TlsCredentials*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), kCredsIndex));
        const Key* k = identity ? self->find_key(identity) : nullptr;
        if (!k || k->key.size() > max_psk) return 0;
        static_cast<TlsSession*>(SSL_get_app_data(ssl))->psk_identity_ = k->identity;
        std::memcpy(psk, k->key.data(), k->key.size());
        return static_cast<unsigned>(k->key.size());
    });
    return std::shared_ptr<const TlsCredentials>(std::move(c));
}

namespace {

// Waits for the socket as OpenSSL asked (SSL_ERROR_WANT_READ/WRITE); false on timeout.
Result<bool> wait_for(int fd, int ssl_err, std::chrono::milliseconds timeout) {
    pollfd p{fd, static_cast<short>(ssl_err == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN), 0};
    for (;;) {
        int n = ::poll(&p, 1, timeout.count() > 0 ? static_cast<int>(timeout.count()) : -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail_errno(Domain::Migration, "poll");
        return n > 0;
    }
}

// The peer's certificate subject: CN and RFC 2253 DN.
std::pair<std::string, std::string> peer_names(SSL* ssl) {
    X509* cert = SSL_get0_peer_certificate(ssl);
    if (!cert) return {};
    X509_NAME* name = X509_get_subject_name(cert);
    char cn[256] = {};
    X509_NAME_get_text_by_NID(name, NID_commonName, cn, sizeof(cn));
    std::string dn;
    if (BIO* bio = BIO_new(BIO_s_mem())) {
        X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253);
        char* data = nullptr;
        long len = BIO_get_mem_data(bio, &data);
        dn.assign(data, static_cast<size_t>(len));
        BIO_free(bio);
    }
    return {cn, dn};
}

}  // namespace

TlsSession::TlsSession(SSL* ssl, int fd) : ssl_(ssl), fd_(fd) {
    SSL_set_app_data(ssl_, this);
    SSL_set_fd(ssl_, fd_);
}

Result<void> TlsSession::handshake(bool is_server, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    int flags = ::fcntl(fd_, F_GETFL);
    ::fcntl(fd_, F_SETFL, flags | O_NONBLOCK);
    SSL* ssl = ssl_;
    int fd = fd_;
    ERR_clear_error();
    for (;;) {
        int rc = is_server ? SSL_accept(ssl) : SSL_connect(ssl);
        if (rc == 1) return {};
        int err = SSL_get_error(ssl, rc);
        if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
            std::string why = ssl_errors();
            if (long v = SSL_get_verify_result(ssl); v != X509_V_OK)
                why = fmt::format("the peer's certificate: {}", X509_verify_cert_error_string(v));
            else if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN)
                why = "the peer closed the connection" + (why == "no detail from OpenSSL" ? "" : " (" + why + ")");
            return fail(Domain::Migration, "TLS handshake failed: " + why);
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return fail(Domain::Migration, "TLS handshake failed: timed out");
        auto ready = wait_for(fd, err, left);
        if (!ready) return std::unexpected(ready.error());
        if (!*ready) return fail(Domain::Migration, "TLS handshake failed: timed out");
    }
}

Result<std::unique_ptr<TlsSession>> TlsSession::client(const TlsConfig& cfg, int fd, const std::string& host,
                                                       std::chrono::milliseconds timeout) {
    if (!cfg.creds || !cfg.creds->client_)
        return fail(Domain::Migration, "the TLS credentials have no client certificate (client-cert.pem, client-key.pem)");
    SSL* ssl = SSL_new(cfg.creds->client_);
    if (!ssl) return std::unexpected(tls_error("SSL_new"));
    if (!cfg.creds->psk()) {
        // The server's certificate must name the host dialled.
        in6_addr a6{};
        in_addr a4{};
        bool is_ip = inet_pton(AF_INET, host.c_str(), &a4) == 1 || inet_pton(AF_INET6, host.c_str(), &a6) == 1;
        int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str()) : SSL_set1_host(ssl, host.c_str());
        if (!is_ip) SSL_set_tlsext_host_name(ssl, host.c_str());
        if (ok != 1) {
            SSL_free(ssl);
            return std::unexpected(tls_error("cannot check the server's name " + host));
        }
    }
    std::unique_ptr<TlsSession> s(new TlsSession(ssl, fd));
    if (auto ok = s->handshake(false, timeout); !ok) return std::unexpected(ok.error());
    return s;
}

Result<std::unique_ptr<TlsSession>> TlsSession::server(const TlsConfig& cfg, int fd, std::chrono::milliseconds timeout) {
    if (!cfg.creds || !cfg.creds->server_)
        return fail(Domain::Migration, "the TLS credentials have no server certificate (server-cert.pem, server-key.pem)");
    SSL* ssl = SSL_new(cfg.creds->server_);
    if (!ssl) return std::unexpected(tls_error("SSL_new"));
    std::unique_ptr<TlsSession> s(new TlsSession(ssl, fd));
    if (auto ok = s->handshake(true, timeout); !ok) return std::unexpected(ok.error());
    if (cfg.authz.empty()) return s;
    if (cfg.creds->psk()) {
        if (cfg.authz != s->psk_identity_)
            return fail(Domain::Migration, fmt::format("refused the client with PSK identity '{}': tls-authz allows only '{}'",
                                                       s->psk_identity_, cfg.authz));
        return s;
    }
    auto [cn, dn] = peer_names(ssl);
    if (cfg.authz != cn && cfg.authz != dn)
        return fail(Domain::Migration, fmt::format("refused the client certificate '{}': tls-authz allows only '{}'", dn, cfg.authz));
    return s;
}

TlsSession::~TlsSession() { SSL_free(ssl_); }

bool TlsSession::pending() const {
    std::lock_guard lock(mu_);
    return SSL_pending(ssl_) > 0;
}

std::string TlsSession::cipher() const {
    std::lock_guard lock(mu_);
    return fmt::format("{} {}", SSL_get_version(ssl_), SSL_get_cipher_name(ssl_));
}

Result<void> TlsSession::write_all(std::span<const uint8_t> data, std::chrono::milliseconds timeout) {
    while (!data.empty()) {
        int err;
        {
            std::lock_guard lock(mu_);
            ERR_clear_error();
            int n = SSL_write(ssl_, data.data(), static_cast<int>(std::min<size_t>(data.size(), 1 << 20)));
            if (n > 0) {
                data = data.subspan(static_cast<size_t>(n));
                continue;
            }
            err = SSL_get_error(ssl_, n);
        }
        if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
            return fail(Domain::Migration, "sending the migration stream (TLS): " +
                                               (err == SSL_ERROR_SYSCALL ? std::string(std::strerror(errno ? errno : EPIPE)) : ssl_errors()));
        auto ready = wait_for(fd_, err, timeout);
        if (!ready) return std::unexpected(ready.error());
        if (!*ready) return fail(Domain::Migration, "sending the migration stream: timed out (the peer reads nothing)");
    }
    return {};
}

Result<void> TlsSession::read_exact(std::span<uint8_t> out, std::chrono::milliseconds timeout) {
    while (!out.empty()) {
        int err;
        {
            std::lock_guard lock(mu_);
            ERR_clear_error();
            int n = SSL_read(ssl_, out.data(), static_cast<int>(std::min<size_t>(out.size(), 1 << 30)));
            if (n > 0) {
                out = out.subspan(static_cast<size_t>(n));
                continue;
            }
            err = SSL_get_error(ssl_, n);
        }
        if (err == SSL_ERROR_ZERO_RETURN) return fail(Domain::Migration, "the migration peer closed the connection");
        if (err == SSL_ERROR_SYSCALL && errno == 0) return fail(Domain::Migration, "the migration peer closed the connection");
        if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
            return fail(Domain::Migration, "receiving the migration stream (TLS): " +
                                               (err == SSL_ERROR_SYSCALL ? std::string(std::strerror(errno)) : ssl_errors()));
        auto ready = wait_for(fd_, err, timeout);
        if (!ready) return std::unexpected(ready.error());
        if (!*ready) return fail(Domain::Migration, "receiving the migration stream: timed out (the peer sends nothing)");
    }
    return {};
}

}  // namespace ferry
