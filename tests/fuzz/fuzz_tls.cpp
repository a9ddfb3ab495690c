// fuzz_tls: the TLS handshake front of a migration destination (migration/tls.cpp):
// whatever bytes a peer sends before a handshake completes. A destination with
// credentials reads nothing else from a new connection, so these bytes, ClientHello
// and onward, are what anyone who can reach the port controls.
//
// Input layout:
//   u8 mode        bit0: 0 PSK credentials, 1 X.509 (a CA and a server certificate made
//                  once, at start, in a temporary directory); bit1: a tls-authz name set
//   the rest       the peer's bytes, written to one end of a socketpair and then shut
//                  (EOF): TlsSession::server reads them from the other end, answers into
//                  the socketpair (its replies are drained and dropped), and must fail or
//                  succeed cleanly within its timeout.
//
// Checks beyond "no crash": with only these bytes and no key, no handshake can succeed
// (a PSK binder or a client certificate signature would be needed).
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include "migration/tls.hpp"

using namespace ferry;

namespace {

// A self-signed CA used as its own server certificate, and the same pair as the
// client's: enough for the server context to load.
std::string make_x509_dir() {
    char tmpl[] = "/tmp/ferry-fuzz-tls-XXXXXX";
    const char* dir = ::mkdtemp(tmpl);
    if (!dir) std::abort();
    EVP_PKEY* key = EVP_EC_gen("P-256");
    X509* cert = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), 0);
    X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
    X509_set_pubkey(cert, key);
    X509_NAME* name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("fuzz"), -1, -1, 0);
    X509_set_issuer_name(cert, name);
    X509_sign(cert, key, EVP_sha256());
    for (const char* role : {"ca", "server", "client"}) {
        std::string base = std::string(dir) + "/" + role;
        FILE* c = std::fopen((base + "-cert.pem").c_str(), "w");
        PEM_write_X509(c, cert);
        std::fclose(c);
        if (std::string(role) == "ca") continue;
        FILE* k = std::fopen((base + "-key.pem").c_str(), "w");
        PEM_write_PrivateKey(k, key, nullptr, nullptr, 0, nullptr, nullptr);
        std::fclose(k);
    }
    X509_free(cert);
    EVP_PKEY_free(key);
    return dir;
}

struct Creds {
    std::shared_ptr<const TlsCredentials> psk, x509;
    Creds() {
        std::string dir = make_x509_dir();
        std::ofstream(dir + "/keys.psk") << "ferry:00112233445566778899aabbccddeeff\n";
        auto p = TlsCredentials::load_psk(dir + "/keys.psk");
        auto x = TlsCredentials::load_x509(dir, true, false);
        if (!p || !x) std::abort();
        psk = *p;
        x509 = *x;
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static Creds creds;
    if (size < 1) return 0;
    const uint8_t mode = data[0];
    TlsConfig cfg{(mode & 1) ? creds.x509 : creds.psk, (mode & 2) ? "ferry" : ""};
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
    // The peer: its bytes, then EOF; whatever the server answers is read and dropped
    // so it never blocks on a full socket.
    std::thread peer([&] {
        const uint8_t* p = data + 1;
        size_t left = size - 1;
        while (left > 0) {
            ssize_t n = ::send(sv[1], p, left, MSG_NOSIGNAL);
            if (n <= 0) break;
            p += n;
            left -= static_cast<size_t>(n);
        }
        ::shutdown(sv[1], SHUT_WR);
        uint8_t sink[4096];
        while (::recv(sv[1], sink, sizeof(sink), 0) > 0) {
        }
    });
    auto s = TlsSession::server(cfg, sv[0], std::chrono::milliseconds(2000));
    if (s) std::abort();  // no key, no certificate: nothing can complete the handshake
    ::shutdown(sv[0], SHUT_RDWR);
    peer.join();
    ::close(sv[0]);
    ::close(sv[1]);
    return 0;
}
