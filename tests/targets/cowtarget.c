/* A controlled target process for the snapshot and trace tests: every page it maps or
 * writes is one the test asked for, and nothing else runs in it (built -static, so that a
 * forked child executes only code whose page tables fork copied).
 *
 * Commands, one per line on stdin; each is answered with one line on stdout:
 *   file PATH                 map the whole file MAP_PRIVATE, read-write -> "ok ID ADDR"
 *   mmap BYTES FLAGS          map anonymous memory; FLAGS: any of s (MAP_SHARED), h
 *                             (MADV_HUGEPAGE), n (MADV_NOHUGEPAGE), d (MADV_DONTFORK),
 *                             w (MADV_WIPEONFORK), a (2 MiB aligned), or - for none -> "ok ID ADDR"
 *   write ID FIRST COUNT STRIDE   write one byte to COUNT pages from page FIRST, every STRIDE -> "ok"
 *   read ID FIRST COUNT STRIDE    read them -> "ok"
 *   arm ID FIRST COUNT STRIDE     what a forked child writes on SIGUSR1 -> "ok"
 *   fork                      fork a child that waits for SIGUSR1 (write the armed pages; each
 *                             SIGUSR1 writes them again with a new value) and SIGTERM (exit) -> "ok PID"
 *   exit                      -> exits 0
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAXR 64
static char *base[MAXR];
static int nr;
static long arm_id = -1, arm_first, arm_count, arm_stride;
static volatile sig_atomic_t got_usr1, got_term;
static char value = 1;

static void on_usr1(int s) { (void)s; got_usr1 = 1; }
static void on_term(int s) { (void)s; got_term = 1; }

static void touch(long id, long first, long count, long stride, int write) {
    volatile char *p = base[id];
    for (long i = 0; i < count; i++) {
        long off = (first + i * stride) * 4096L;
        if (write)
            p[off] = value;
        else
            (void)p[off];
    }
}

static void child_loop(void) {
    sigset_t none;
    sigemptyset(&none);
    close(0);                     /* hold no pipe of the test's open: EOF reaches it when the parent dies */
    close(1);
    for (;;) {
        while (!got_usr1 && !got_term)
            sigsuspend(&none);
        if (got_term)
            _exit(0);
        got_usr1 = 0;
        value++;
        if (arm_id >= 0)
            touch(arm_id, arm_first, arm_count, arm_stride, 1);
    }
}

int main(void) {
    char line[256];
    sigset_t block;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, 0);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, 0);
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, 0);        /* delivered only inside sigsuspend */
    setvbuf(stdout, 0, _IOLBF, 0);
    while (fgets(line, sizeof line, stdin)) {
        char cmd[16], flags[16] = "-";
        long a = 0, b = 0, c = 0, d = 1;
        if (sscanf(line, "%15s", cmd) != 1)
            continue;
        if (!strcmp(cmd, "mmap")) {
            sscanf(line, "%*s %ld %15s", &a, flags);
            int shared = strchr(flags, 's') != 0;
            long len = a, extra = strchr(flags, 'a') ? (2L << 20) : 0;
            char *p = mmap(0, len + extra, PROT_READ | PROT_WRITE,
                           (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) { printf("error mmap\n"); continue; }
            if (extra) {
                char *q = (char *)(((unsigned long)p + extra - 1) & ~(extra - 1));
                if (q > p) munmap(p, q - p);
                if (q + len < p + len + extra) munmap(q + len, p + len + extra - (q + len));
                p = q;
            }
            if (strchr(flags, 'h')) madvise(p, len, MADV_HUGEPAGE);
            if (strchr(flags, 'n')) madvise(p, len, MADV_NOHUGEPAGE);
            if (strchr(flags, 'd')) madvise(p, len, MADV_DONTFORK);
            if (strchr(flags, 'w')) madvise(p, len, MADV_WIPEONFORK);
            base[nr] = p;
            printf("ok %d %lx\n", nr++, (unsigned long)p);
        } else if (!strcmp(cmd, "file")) {
            char path[200];
            struct stat st;
            int fd;
            if (sscanf(line, "%*s %199s", path) != 1 || (fd = open(path, O_RDONLY)) < 0 || fstat(fd, &st)) {
                printf("error file\n");
                continue;
            }
            char *p = mmap(0, st.st_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
            close(fd);
            if (p == MAP_FAILED) { printf("error mmap\n"); continue; }
            base[nr] = p;
            printf("ok %d %lx\n", nr++, (unsigned long)p);
        } else if (!strcmp(cmd, "write") || !strcmp(cmd, "read") || !strcmp(cmd, "arm")) {
            sscanf(line, "%*s %ld %ld %ld %ld", &a, &b, &c, &d);
            if (a < 0 || a >= nr) { printf("error id\n"); continue; }
            if (!strcmp(cmd, "arm")) {
                arm_id = a; arm_first = b; arm_count = c; arm_stride = d;
            } else {
                touch(a, b, c, d, cmd[0] == 'w');
            }
            printf("ok\n");
        } else if (!strcmp(cmd, "fork")) {
            pid_t pid = fork();
            if (pid == 0)
                child_loop();
            printf("ok %d\n", (int)pid);
        } else if (!strcmp(cmd, "exit")) {
            return 0;
        } else {
            printf("error command\n");
        }
    }
    return 0;
}
