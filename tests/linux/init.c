// /init of the initramfs that ferry's Linux boot test boots (scripts/build-linux
// builds it with gcc -static). Linux's own drivers are ferry's clients here. One line
// each on the console:
//   ferry-init: hello
//   ferry-init: cpus=N                        (online CPUs, from sysconf)
//   ferry-init: vda absent | ferry-init: vda read=512 head=XXXXXXXXXXXXXXXX
//   ferry-init: vda write=65536 readback=ok|bad irqs=N
//       a 64 KiB pattern (from ferry.seed=N) written at byte 1 MiB with O_DIRECT, read
//       back with O_DIRECT; the test then finds it in the image file
//   ferry-init: eth0 absent | ferry-init: eth0 mac=M pong=ok|timeout tries=N irqs=N
//       frames of type 0x88b6 over a packet socket: "ferry-linux ping SEED SEQ" sent
//       to the broadcast address until the host side of the tap answers "ferry-linux
//       pong SEED SEQ"
//   with ferry.memtest=MiB: a memory-checking loop, one line a second, that ends when
//   the disk (if any) holds "ferry-stop" at byte 2 MiB (the migration test writes it
//   into the image file once the guest runs on the destination)
//   ferry-init: mem pass=N bad=B             (B: pages that lost their last stamp)
// With ferry.reboot=1 it reboots instead (`ferry-init: rebooting`, reboot(RB_AUTOBOOT)).
// Otherwise it powers off: `ferry-init: powering off status=S via=acpi|port` (S: 0, or 1 for a
// bad disk readback, plus 2 for no pong, plus 4 for pages the memory check lost). With
// status 0 and ACPI (/sys/firmware/acpi), reboot(RB_POWER_OFF): Linux writes S5 to
// ferry's ACPI sleep register and `ferry run` exits with 0. Otherwise a write of S to
// ferry's exit port 0xf4 (`ferry run` exits with S), then reboot(RB_POWER_OFF).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

enum { kPatternOff = 1 << 20, kPatternLen = 64 << 10, kStopOff = 2 << 20, kEtherType = 0x88b6 };

static char cmdline[4096];

// The value of `key=` on the kernel command line, or NULL.
static const char *param(const char *key) {
    size_t n = strlen(key);
    for (const char *p = cmdline; (p = strstr(p, key)) != NULL; p += n)
        if ((p == cmdline || p[-1] == ' ') && p[n] == '=') return p + n + 1;
    return NULL;
}

// splitmix64's finaliser, as tests/common/mix64.hpp has it (the test recomputes the pattern).
static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

// The interrupts counted on every CPU for the /proc/interrupts line whose name is `name`.
static long irq_count(const char *name) {
    FILE *f = fopen("/proc/interrupts", "r");
    if (!f) return -1;
    char line[1024];
    long total = -1;
    while (fgets(line, sizeof(line), f)) {
        size_t len = strcspn(line, "\n");
        line[len] = 0;
        size_t nl = strlen(name);
        if (len < nl + 1 || strcmp(line + len - nl, name) != 0 || line[len - nl - 1] != ' ') continue;
        char *p = strchr(line, ':');
        if (!p) continue;
        total = 0;
        for (char *end;; p = end) {
            long v = strtol(p + 1, &end, 10);
            if (end == p + 1) break;
            total += v;
        }
    }
    fclose(f);
    return total;
}

// The virtioN name of the first virtio device with `device_id` (1 net, 2 block).
static int virtio_name(int device_id, char *out, size_t size) {
    for (int i = 0; i < 8; ++i) {
        char path[64];
        snprintf(path, sizeof(path), "/sys/bus/virtio/devices/virtio%d/device", i);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        unsigned id = 0;
        int ok = fscanf(f, "%x", &id) == 1;
        fclose(f);
        if (ok && (int)id == device_id) {
            snprintf(out, size, "virtio%d", i);
            return 1;
        }
    }
    return 0;
}

static int check_disk(uint64_t seed) {
    int fd = open("/dev/vda", O_RDWR);
    if (fd < 0) {
        printf("ferry-init: vda absent\n");
        return 0;
    }
    unsigned char sector[512] = {0};
    ssize_t n = read(fd, sector, sizeof(sector));
    printf("ferry-init: vda read=%zd head=", n);
    for (int i = 0; i < 8; ++i) printf("%02x", sector[i]);
    printf("\n");
    close(fd);

    fd = open("/dev/vda", O_RDWR | O_DIRECT);
    uint64_t *out = mmap(NULL, kPatternLen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint64_t *in = mmap(NULL, kPatternLen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (fd < 0 || out == MAP_FAILED || in == MAP_FAILED) {
        printf("ferry-init: vda O_DIRECT open failed\n");
        return 1;
    }
    for (size_t i = 0; i < kPatternLen / 8; ++i) out[i] = mix64(seed * 0x10000 + i);
    ssize_t w = pwrite(fd, out, kPatternLen, kPatternOff);
    int synced = fsync(fd) == 0;
    ssize_t r = pread(fd, in, kPatternLen, kPatternOff);
    int ok = w == kPatternLen && r == kPatternLen && synced && memcmp(in, out, kPatternLen) == 0;
    close(fd);
    char name[16] = "";
    virtio_name(2, name, sizeof(name));
    printf("ferry-init: vda write=%zd readback=%s irqs=%ld\n", w, ok ? "ok" : "bad", irq_count(name));
    return ok ? 0 : 1;
}

static int check_net(uint64_t seed) {
    // The index through the packet socket itself: glibc's if_nametoindex wants an AF_UNIX
    // or AF_INET socket, and this kernel has neither.
    int s = socket(AF_PACKET, SOCK_RAW, htons(kEtherType));
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    strcpy(ifr.ifr_name, "eth0");
    if (s < 0 || ioctl(s, SIOCGIFINDEX, &ifr) != 0) {
        printf("ferry-init: eth0 absent\n");
        if (s >= 0) close(s);
        return 0;
    }
    const int ifindex = ifr.ifr_ifindex;
    ioctl(s, SIOCGIFFLAGS, &ifr);
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) perror("ferry-init: eth0 up");
    unsigned char mac[6] = {0};
    if (ioctl(s, SIOCGIFHWADDR, &ifr) == 0) memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
    struct sockaddr_ll a;
    memset(&a, 0, sizeof(a));
    a.sll_family = AF_PACKET;
    a.sll_protocol = htons(kEtherType);
    a.sll_ifindex = ifindex;
    bind(s, (struct sockaddr *)&a, sizeof(a));

    int tries = 0, ok = 0;
    const double deadline = now_s() + 120;  // the nested test VM is slow
    while (!ok && now_s() < deadline) {
        ++tries;
        unsigned char frame[64] = {0};
        memset(frame, 0xff, 6);
        memcpy(frame + 6, mac, 6);
        frame[12] = kEtherType >> 8;
        frame[13] = kEtherType & 0xff;
        snprintf((char *)frame + 14, sizeof(frame) - 14, "ferry-linux ping %llu %d", (unsigned long long)seed, tries);
        a.sll_halen = 6;
        memset(a.sll_addr, 0xff, 6);
        if (sendto(s, frame, sizeof(frame), 0, (struct sockaddr *)&a, sizeof(a)) != (ssize_t)sizeof(frame))
            perror("ferry-init: eth0 send");
        char want[48];
        snprintf(want, sizeof(want), "ferry-linux pong %llu ", (unsigned long long)seed);
        const double until = now_s() + 1;
        while (!ok && now_s() < until) {
            struct pollfd p = {s, POLLIN, 0};
            if (poll(&p, 1, 200) <= 0) continue;
            unsigned char in[1600];
            ssize_t n = recv(s, in, sizeof(in), 0);
            if (n >= 14 + (ssize_t)strlen(want) && memcmp(in + 14, want, strlen(want)) == 0) ok = 1;
        }
    }
    char name[16] = "";
    virtio_name(1, name, sizeof(name));
    printf("ferry-init: eth0 mac=%02x:%02x:%02x:%02x:%02x:%02x pong=%s tries=%d irqs=%ld\n", mac[0], mac[1], mac[2],
           mac[3], mac[4], mac[5], ok ? "ok" : "timeout", tries, irq_count(name));
    close(s);
    return ok ? 0 : 2;
}

// Whether the disk holds "ferry-stop" at byte kStopOff (read past any cache).
static int stop_requested(void) {
    static char *buf;
    if (!buf) buf = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int fd = open("/dev/vda", O_RDONLY | O_DIRECT);
    if (fd < 0 || buf == MAP_FAILED) {
        if (fd >= 0) close(fd);
        return 0;
    }
    int stop = pread(fd, buf, 512, kStopOff) == 512 && memcmp(buf, "ferry-stop", 10) == 0;
    close(fd);
    return stop;
}

// Rewrites `mib` MiB page by page, each page stamped with (pass, page), checking the
// previous pass's stamp first; a pass and a line a second (a dirty rate of `mib` MiB/s
// that precopy converges on), until stop_requested(). Returns 4 if a page lost its stamp.
static int memtest(long mib) {
    const size_t pages = (size_t)mib << 8;
    uint64_t *mem = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        printf("ferry-init: mem mmap of %ld MiB failed\n", mib);
        return 4;
    }
    uint64_t bad = 0;
    double next = now_s() + 1;
    for (uint64_t pass = 1;; ++pass) {
        for (size_t pg = 0; pg < pages; ++pg) {
            uint64_t *w = mem + pg * 512;
            if (pass > 1 && (w[0] != mix64((pass - 1) << 32 | pg) || w[511] != ~w[0])) ++bad;
            w[0] = mix64(pass << 32 | pg);
            w[511] = ~w[0];
        }
        printf("ferry-init: mem pass=%llu bad=%llu\n", (unsigned long long)pass, (unsigned long long)bad);
        if (stop_requested()) {
            printf("ferry-init: mem stop\n");
            return bad ? 4 : 0;
        }
        double wait = next - now_s();
        if (wait > 0) {
            struct timespec t = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
            nanosleep(&t, NULL);
        }
        next += 1;
        if (next < now_s()) next = now_s() + 1;
    }
}

int main(void) {
    mkdir("/dev", 0755);
    mkdir("/proc", 0555);
    mkdir("/sys", 0555);
    mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    mount("proc", "/proc", "proc", 0, NULL);
    mount("sysfs", "/sys", "sysfs", 0, NULL);
    int con = open("/dev/console", O_RDWR);
    if (con >= 0) {
        dup2(con, 0);
        dup2(con, 1);
        dup2(con, 2);
        if (con > 2) close(con);
    }
    setvbuf(stdout, NULL, _IONBF, 0);
    int cf = open("/proc/cmdline", O_RDONLY);
    if (cf >= 0) {
        ssize_t n = read(cf, cmdline, sizeof(cmdline) - 1);
        if (n > 0) cmdline[n] = 0;
        cmdline[strcspn(cmdline, "\n")] = 0;
        close(cf);
    }
    const char *seed_s = param("ferry.seed");
    uint64_t seed = seed_s ? strtoull(seed_s, NULL, 10) : 1;

    printf("ferry-init: hello\n");
    printf("ferry-init: cpus=%ld\n", sysconf(_SC_NPROCESSORS_ONLN));
    int status = check_disk(seed) | check_net(seed);
    const char *mt = param("ferry.memtest");
    if (mt) status |= memtest(strtol(mt, NULL, 10));

    if (param("ferry.reboot")) {
        printf("ferry-init: rebooting\n");
        sync();
        tcdrain(STDOUT_FILENO);
        reboot(RB_AUTOBOOT);  // Linux tries the ACPI reset register first, then the i8042
    }
    const int acpi = access("/sys/firmware/acpi", F_OK) == 0;
    const int via_acpi = status == 0 && acpi;
    printf("ferry-init: powering off status=%d via=%s\n", status, via_acpi ? "acpi" : "port");
    sync();
    tcdrain(STDOUT_FILENO);  // the 8250 sends the line before ferry exits
    if (!via_acpi) {
        if (ioperm(0xf4, 4, 1) == 0)
            outl((unsigned)status, 0xf4);
        else
            perror("ferry-init: ioperm(0xf4)");
    }
    reboot(RB_POWER_OFF);
    for (;;) pause();
}
