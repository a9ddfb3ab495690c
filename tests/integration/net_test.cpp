// virtio-net end to end: the test guest's ring-3 virtio-net driver (mode=net, guest/net.c)
// on a tap device the test creates. The test sits on the host side of the tap with a
// packet socket: it sees the guest's hello frames, sends requests and checks each
// answer; a frame with a bad check is counted by the guest and not answered; a guest
// with a network card migrates to a destination on another tap (as on another host)
// and answers there; a tap that is taken is one clear error; a card behind two disks is
// the third virtio-mmio device (window, IRQ) and its interrupts arrive.
//
// Needs CAP_NET_ADMIN (`ip tuntap add`) besides /dev/kvm; without it the tests say why
// and check nothing.
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <fstream>
#include <catch2/catch.hpp>
#include <cstring>
#include <map>
#include <memory>
#include <regex>
#include <thread>

#include "process.hpp"
#include "tests/common/mix64.hpp"

using namespace ferry::test;
using namespace std::chrono_literals;

namespace {

constexpr auto kLong = 120s;
constexpr uint16_t kType = 0x88b5;
constexpr uint16_t kRarp = 0x8035;
constexpr uint64_t kSalt = 0x6e6574;
using Mac = std::array<uint8_t, 6>;
constexpr Mac kHostMac = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
constexpr Mac kGuestMac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

// A tap device made for one test, up, and a packet socket on its host side.
class TapDev {
public:
    explicit TapDev(const std::string& tag) {
        name = "fy" + std::to_string(::getpid() % 100000) + tag;
        if (!add_tap(name)) {
            name.clear();
            return;
        }
        int index = 0, rarp_index = 0;
        sock_ = tap_packet_socket(name, kType, index);
        rarp_ = tap_packet_socket(name, kRarp, rarp_index);
        if (sock_ >= 0 && rarp_ >= 0) ifindex_ = index;
    }
    ~TapDev() {
        if (sock_ >= 0) ::close(sock_);
        if (rarp_ >= 0) ::close(rarp_);
        if (!name.empty()) del_tap(name);
    }
    bool ok() const { return ifindex_ > 0; }

    struct Frame {
        Mac dst{}, src{};
        uint8_t kind = 0;
        uint32_t seq = 0;
        uint64_t check = 0;
    };
    void send(const Frame& f) {
        uint8_t b[64] = {};
        std::memcpy(b, f.dst.data(), 6);
        std::memcpy(b + 6, f.src.data(), 6);
        b[12] = kType >> 8;
        b[13] = kType & 0xff;
        std::memcpy(b + 14, "FNET", 4);
        b[18] = f.kind;
        std::memcpy(b + 22, &f.seq, 4);  // little-endian host
        std::memcpy(b + 26, &f.check, 8);
        sockaddr_ll a{};
        a.sll_family = AF_PACKET;
        a.sll_ifindex = ifindex_;
        a.sll_halen = 6;
        std::memcpy(a.sll_addr, f.dst.data(), 6);
        REQUIRE(::sendto(sock_, b, sizeof(b), 0, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == sizeof(b));
    }
    // The next frame of our type, or nothing within `timeout`.
    std::optional<Frame> recv(std::chrono::milliseconds timeout) {
        auto end = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
            if (left.count() <= 0) return std::nullopt;
            pollfd p{sock_, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
            uint8_t b[2048];
            sockaddr_ll from{};
            socklen_t fl = sizeof(from);
            ssize_t n = ::recvfrom(sock_, b, sizeof(b), 0, reinterpret_cast<sockaddr*>(&from), &fl);
            if (n < 34 || from.sll_pkttype == PACKET_OUTGOING || std::memcmp(b + 14, "FNET", 4) != 0) continue;
            Frame f;
            std::memcpy(f.dst.data(), b, 6);
            std::memcpy(f.src.data(), b + 6, 6);
            f.kind = b[18];
            std::memcpy(&f.seq, b + 22, 4);
            std::memcpy(&f.check, b + 26, 8);
            return f;
        }
    }
    // Sends requests seq first..first+count-1 and returns how many were answered right.
    int exchange(uint32_t first, int count) {
        for (int i = 0; i < count; ++i)
            send(Frame{kGuestMac, kHostMac, 1, first + i, mix64(kSalt ^ (first + i))});
        int good = 0;
        auto end = std::chrono::steady_clock::now() + 20s;
        while (good < count && std::chrono::steady_clock::now() < end) {
            auto f = recv(1s);
            if (!f || f->kind != 2) continue;
            bool right = f->dst == kHostMac && f->src == kGuestMac && f->seq >= first && f->seq < first + count &&
                         f->check == mix64(mix64(kSalt ^ f->seq));
            CHECK(right);
            good += right;
        }
        return good;
    }

    // RARP announcements (ferry's, devices/virtio/announce.hpp) that came out of the tap
    // until `quiet` passed without one: how many were well-formed and from `mac`, and
    // how many were not.
    std::pair<int, int> rarps(const Mac& mac, std::chrono::milliseconds quiet) {
        int good = 0, other = 0;
        pollfd p{rarp_, POLLIN, 0};
        while (::poll(&p, 1, static_cast<int>(quiet.count())) > 0) {
            uint8_t b[128];
            ssize_t n = ::recv(rarp_, b, sizeof(b), 0);
            if (n <= 0) break;
            bool ok = n == 60 && std::memcmp(b, "\xff\xff\xff\xff\xff\xff", 6) == 0 && std::memcmp(b + 6, mac.data(), 6) == 0 &&
                      b[20] == 0 && b[21] == 3 && std::memcmp(b + 22, mac.data(), 6) == 0 && std::memcmp(b + 32, mac.data(), 6) == 0;
            (ok ? good : other)++;
        }
        return {good, other};
    }

    std::string name;

private:
    int sock_ = -1;
    int rarp_ = -1;
    int ifindex_ = 0;
};

struct NetLine {
    uint64_t tx = 0, rx = 0, bad = 0;
};
std::optional<NetLine> parse_net(const std::optional<std::string>& line) {
    std::smatch m;
    static const std::regex re("^guest: net tx=(\\d+) rx=(\\d+) bad=(\\d+)");
    if (!line || !std::regex_search(*line, m, re)) return std::nullopt;
    return NetLine{std::stoull(m[1]), std::stoull(m[2]), std::stoull(m[3])};
}


// A migration source: the test guest in mode=net behind `tap`, with QMP at `qmp`,
// once its driver is up (required).
std::unique_ptr<Process> net_source(const TapDev& tap, const std::string& qmp) {
    auto p = std::make_unique<Process>(std::vector<std::string>{ferry_bin(), "run", "--kernel", testguest_elf(), "--mem", "64M",
                                                                "--qmp", qmp, "--net", "tap:" + tap.name, "--cmdline", "mode=net"});
    REQUIRE(p->wait_line(std::regex("^guest: net mac="), kLong));
    return p;
}

#define NEED_TAP(tap)                                                                              \
    if (!(tap).ok()) {                                                                             \
        WARN("skipped: cannot create and open a tap device here (needs CAP_NET_ADMIN, /dev/net/tun)"); \
        return;                                                                                    \
    }

}  // namespace

TEST_CASE("virtio-net: the guest's frames reach the tap and it answers requests", "[kvm][virtio][net]") {
    TapDev tap("a");
    NEED_TAP(tap);
    Process p({ferry_bin(), "run", "--kernel", testguest_elf(), "--mem", "64M", "--net", "tap:" + tap.name, "--cmdline", "mode=net"});
    INFO("guest: " << p.out_text() << p.err());
    REQUIRE(p.wait_line(std::regex("^guest: net mac=52:54:00:12:34:56"), kLong));
    // Hello frames: broadcast, from the card's MAC, with the right check.
    auto hello = tap.recv(10s);
    while (hello && hello->kind != 0) hello = tap.recv(10s);
    REQUIRE(hello);
    CHECK(hello->src == kGuestMac);
    CHECK(hello->dst == Mac{0xff, 0xff, 0xff, 0xff, 0xff, 0xff});
    CHECK(hello->check == mix64(kSalt ^ hello->seq));
    // 20 requests, at most 8 in flight: the guest drops an answer when its 16-entry
    // transmit ring is full (txfull=), which a slow host (the nested test VM) can make
    // happen with 20 at once.
    CHECK(tap.exchange(1, 8) + tap.exchange(9, 8) + tap.exchange(17, 4) == 20);
    // A request with a bad check is counted, not answered.
    tap.send(TapDev::Frame{kGuestMac, kHostMac, 1, 99, 12345});
    CHECK(tap.exchange(100, 5) == 5);
    // The guest's counters, from its next status lines (one a second; on a slow host
    // several may already be waiting, so read on for up to a minute's worth).
    std::optional<NetLine> last;
    for (int i = 0; i < 60 && !(last && last->rx >= 25 && last->bad >= 1); ++i) last = parse_net(p.wait_line(std::regex("^guest: net tx="), 30s));
    REQUIRE(last);
    CHECK(last->rx == 25);
    CHECK(last->bad == 1);
    CHECK(last->tx >= 26);
    // The tap is taken: a second VM on it is refused with one clear line.
    Process second({ferry_bin(), "run", "--kernel", testguest_elf(), "--mem", "64M", "--net", "tap:" + tap.name});
    auto rc = second.wait_exit(30s);
    REQUIRE(rc);
    CHECK(*rc != 0);
    CHECK(*rc < 128);
    CHECK(second.err().find("--net tap:" + tap.name) != std::string::npos);
    p.signal(SIGTERM);
    CHECK(p.wait_exit(30s) == 0);
}

TEST_CASE("virtio-net: a guest with a network card migrates to another tap and answers there", "[kvm][virtio][net][migration]") {
    TapDev a("s"), b("d");
    NEED_TAP(a);
    NEED_TAP(b);
    auto q = sock("src");
    auto src = net_source(a, q);
    CHECK(a.exchange(1, 10) == 10);
    // A destination with another MAC is refused; the source goes on.
    {
        Process dst({ferry_bin(), "run", "--mem", "64M", "--net", "tap:" + b.name + ",mac=02:00:00:00:00:99", "--incoming",
                     "tcp:127.0.0.1:0"});
        auto port = incoming_port(dst);
        REQUIRE(port);
        Process mig({ferry_bin(), "migrate", "--qmp", q, "--to", "tcp:127.0.0.1:" + *port});
        auto rc = mig.wait_exit(kLong);
        REQUIRE(rc);
        CHECK(*rc != 0);
        dst.wait_exit(30s);
        INFO("dest: " << dst.err());
        CHECK(dst.err().find("MAC") != std::string::npos);
        CHECK(a.exchange(11, 5) == 5);
    }
    Process dst({ferry_bin(), "run", "--mem", "64M", "--net", "tap:" + b.name, "--incoming", "tcp:127.0.0.1:0"});
    auto port = incoming_port(dst);
    REQUIRE(port);
    Process mig({ferry_bin(), "migrate", "--qmp", q, "--to", "tcp:127.0.0.1:" + *port});
    auto mig_rc = mig.wait_exit(kLong);
    INFO("migrate: " << mig.out_text() << mig.err() << "\nsource: " << src->err() << "\ndest: " << dst.err());
    REQUIRE(mig_rc == 0);
    CHECK(src->wait_exit(30s) == 0);
    src.reset();
    // The destination announced the guest's MAC: QEMU's default, 5 RARP frames in 0.8 s.
    CHECK(b.rarps(kGuestMac, 3s) == std::pair{5, 0});
    // The guest now lives behind tap b: its hellos and answers come out there.
    CHECK(b.exchange(100, 10) == 10);
    std::optional<NetLine> last;
    for (int i = 0; i < 60 && !(last && last->rx >= 25); ++i) last = parse_net(dst.wait_line(std::regex("^guest: net tx="), 30s));
    REQUIRE(last);
    CHECK(last->rx == 25);  // 15 on the source, 10 here: the counters came along
    CHECK(last->bad == 0);
    dst.signal(SIGTERM);
    CHECK(dst.wait_exit(30s) == 0);
}

TEST_CASE("virtio-net: frames arriving during the switch-over wait for the destination, each answered once", "[kvm][virtio][net][migration]") {
    // The source stops receiving once its guest is paused. A frame written into guest
    // RAM after the last round never reaches the destination, whose guest then finds
    // the saved used index ahead of its ring and takes stale buffers (frames it
    // already answered) for new ones: answers come twice.
    TapDev a("fs"), b("fd");
    NEED_TAP(a);
    NEED_TAP(b);
    auto q = sock("flood");
    auto src = net_source(a, q);
    REQUIRE(a.exchange(1, 5) == 5);
    Process dst({ferry_bin(), "run", "--mem", "64M", "--net", "tap:" + b.name, "--incoming", "tcp:127.0.0.1:0"});
    auto port = incoming_port(dst);
    REQUIRE(port);
    constexpr uint32_t kFlood = 1000, kFirst = 1000000;
    std::map<uint32_t, int> answers;  // seq -> times answered, both taps
    int wrong = 0;
    auto take = [&](const std::optional<TapDev::Frame>& f) {
        if (!f || f->kind != 2) return;
        if (f->dst == kHostMac && f->src == kGuestMac && f->check == mix64(mix64(kSalt ^ f->seq))) answers[f->seq]++;
        else wrong++;
    };
    std::atomic<bool> stop{false};
    std::atomic<uint32_t> sent{0};
    std::thread flood([&] {
        for (uint32_t seq = kFlood; !stop; ++seq) {
            a.send(TapDev::Frame{kGuestMac, kHostMac, 1, seq, mix64(kSalt ^ seq)});
            sent++;
            std::this_thread::sleep_for(50us);
        }
    });
    std::thread listen([&] {
        while (!stop) take(a.recv(100ms));
    });
    Process mig({ferry_bin(), "migrate", "--qmp", q, "--to", "tcp:127.0.0.1:" + *port});
    auto mig_rc = mig.wait_exit(kLong);
    auto src_rc = src->wait_exit(30s);
    stop = true;
    flood.join();
    listen.join();
    INFO("migrate: " << mig.out_text() << mig.err() << "\nsource: " << src->err() << "\ndest: " << dst.err());
    REQUIRE(mig_rc == 0);
    CHECK(src_rc == 0);
    src.reset();
    // Ten requests behind tap b, then a second more of listening there.
    for (uint32_t i = 0; i < 10; ++i) b.send(TapDev::Frame{kGuestMac, kHostMac, 1, kFirst + i, mix64(kSalt ^ (kFirst + i))});
    auto fresh = [&] {
        int n = 0;
        for (uint32_t i = 0; i < 10; ++i) n += answers.count(kFirst + i) ? 1 : 0;
        return n;
    };
    for (auto end = std::chrono::steady_clock::now() + 20s; fresh() < 10 && std::chrono::steady_clock::now() < end;) take(b.recv(1s));
    for (auto end = std::chrono::steady_clock::now() + 1s; std::chrono::steady_clock::now() < end;) take(b.recv(100ms));
    int twice = 0;
    for (auto [seq, n] : answers) twice += n > 1 ? 1 : 0;
    INFO("flood frames sent: " << sent.load() << ", answered: " << answers.size() - fresh() << ", answered more than once: " << twice
                               << "\ndestination: " << dst.out_text());
    CHECK(fresh() == 10);
    CHECK(wrong == 0);
    CHECK(twice == 0);
    dst.signal(SIGTERM);
    CHECK(dst.wait_exit(30s) == 0);
}

TEST_CASE("virtio-net: QMP announce-self sends RARP frames with the card's MAC; bad arguments are refused", "[kvm][virtio][net][qmp]") {
    TapDev tap("q");
    NEED_TAP(tap);
    auto q = sock("announce");
    Process p({ferry_bin(), "run", "--kernel", testguest_elf(), "--mem", "64M", "--qmp", q, "--net", "tap:" + tap.name, "--cmdline",
               "mode=net"});
    INFO("guest: " << p.out_text() << p.err());
    REQUIRE(p.wait_line(std::regex("^guest: net mac="), kLong));
    CHECK(tap.rarps(kGuestMac, 500ms) == std::pair{0, 0});  // nothing unasked
    auto qmp = [&](const std::string& args) {
        Process c({ferry_bin(), "qmp", "--qmp", q, "announce-self", args});
        auto rc = c.wait_exit(30s);
        return std::pair{rc.value_or(-1), c.err()};
    };
    auto [rc, err] = qmp(R"({"initial": 10, "max": 40, "rounds": 3, "step": 10, "interfaces": ["net0"]})");
    INFO(err);
    CHECK(rc == 0);
    CHECK(tap.rarps(kGuestMac, 2s) == std::pair{3, 0});
    auto unknown = qmp(R"({"initial": 10, "max": 40, "rounds": 3, "step": 10, "interfaces": ["net7"]})");
    CHECK(unknown.first == 1);
    CHECK(unknown.second.find("'net7' is not a network card") != std::string::npos);
    auto zero = qmp(R"({"initial": 10, "max": 40, "rounds": 0, "step": 10})");
    CHECK(zero.first == 1);
    CHECK(zero.second.find("rounds 0") != std::string::npos);
    auto missing = qmp(R"({"initial": 10, "max": 40, "rounds": 3})");
    CHECK(missing.first == 1);
    CHECK(missing.second.find("Parameter 'step' is missing") != std::string::npos);
    CHECK(tap.rarps(kGuestMac, 500ms) == std::pair{0, 0});  // the refused calls sent nothing
    CHECK(tap.exchange(1, 3) == 3);  // the guest's network works as before
    p.signal(SIGTERM);
    CHECK(p.wait_exit(30s) == 0);
}

TEST_CASE("virtio-net: behind two disks the card is the third virtio-mmio device", "[kvm][virtio][net]") {
    TapDev tap("m");
    NEED_TAP(tap);
    std::vector<std::string> images;
    for (const char* n : {"a", "b"}) {
        images.push_back("/tmp/ferry-net-" + std::to_string(::getpid()) + "-" + n + ".img");
        std::ofstream(images.back(), std::ios::binary).seekp((1 << 20) - 1).put('\0');
    }
    Process p({ferry_bin(), "run", "--kernel", testguest_elf(), "--mem", "64M", "--disk", images[0], "--disk", images[1], "--net",
               "tap:" + tap.name + ",mac=02:00:00:00:00:07", "--cmdline", "mode=net"});
    INFO("guest: " << p.out_text() << p.err());
    CHECK(p.wait_line(std::regex("^guest: net mac=02:00:00:00:00:07 base=0xd0002000 irq=7$"), kLong));
    // Requests to that MAC are answered, and the card's interrupts reach the guest.
    Mac mac{0x02, 0, 0, 0, 0, 0x07};
    for (uint32_t s = 1; s <= 5; ++s) tap.send(TapDev::Frame{mac, kHostMac, 1, s, mix64(kSalt ^ s)});
    int answered = 0;
    for (int i = 0; i < 50 && answered < 5; ++i)
        if (auto f = tap.recv(1s); f && f->kind == 2 && f->src == mac && f->check == mix64(mix64(kSalt ^ f->seq))) ++answered;
    CHECK(answered == 5);
    CHECK(p.wait_line(std::regex("^guest: net tx=.* irqs=[1-9]"), 30s));
    p.signal(SIGTERM);
    CHECK(p.wait_exit(30s) == 0);
    for (const auto& i : images) ::unlink(i.c_str());
}
