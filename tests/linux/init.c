// /init of the initramfs that ferry's Linux boot test boots (scripts/build-linux
// builds it with gcc -static). One line each on the console:
//   ferry-init: hello
//   ferry-init: cpus=N                (online CPUs, from sysconf)
//   ferry-init: vda read=512 head=XXXXXXXXXXXXXXXX | ferry-init: vda absent
// then powers off: a write to ferry's exit port 0xf4 (ends `ferry run` with status
// 0; ignored by a VMM without one) and reboot(RB_POWER_OFF).
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/io.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <unistd.h>

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

    printf("ferry-init: hello\n");
    printf("ferry-init: cpus=%ld\n", sysconf(_SC_NPROCESSORS_ONLN));

    int vda = open("/dev/vda", O_RDONLY);
    if (vda < 0) {
        printf("ferry-init: vda absent\n");
    } else {
        unsigned char sector[512] = {0};
        ssize_t n = read(vda, sector, sizeof(sector));
        printf("ferry-init: vda read=%zd head=", n);
        for (int i = 0; i < 8; ++i) printf("%02x", sector[i]);
        printf("\n");
        close(vda);
    }

    printf("ferry-init: powering off\n");
    sync();
    if (ioperm(0xf4, 4, 1) == 0) outl(0, 0xf4);
    reboot(RB_POWER_OFF);
    for (;;) pause();
}
