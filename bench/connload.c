/* A paced loopback TCP load for bench/agent_cost.py (compiled there with cc -O2).
 *
 *   connload RATE SECONDS PORT0 NPORTS
 *
 * Forks a server listening on 127.0.0.1:PORT0 .. PORT0+NPORTS-1, then opens RATE new connections a
 * second for SECONDS, round-robin over the ports. Each connection: the client sends 64 bytes, the
 * server reads them, answers 32 bytes and closes first (its side keeps TIME_WAIT, so the client's
 * ephemeral ports come back at once); the client reads to end of stream and closes.
 * Prints "done CONNECTIONS ERRORS SECONDS" on stdout. Only loopback is used.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct sockaddr_in addr(int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static void serve(int *fds, int n) {
    struct pollfd p[64];
    char buf[64], reply[32];
    memset(reply, 'r', sizeof(reply));
    for (int i = 0; i < n; i++) {
        p[i].fd = fds[i];
        p[i].events = POLLIN;
    }
    for (;;) {
        if (poll(p, n, -1) < 0 && errno != EINTR)
            _exit(1);
        for (int i = 0; i < n; i++) {
            if (!(p[i].revents & POLLIN))
                continue;
            int c = accept(p[i].fd, NULL, NULL);
            if (c < 0)
                continue;
            size_t got = 0;
            while (got < sizeof(buf)) {
                ssize_t r = read(c, buf + got, sizeof(buf) - got);
                if (r <= 0)
                    break;
                got += r;
            }
            if (write(c, reply, sizeof(reply)) < 0) {
            }
            close(c);
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: connload RATE SECONDS PORT0 NPORTS\n");
        return 2;
    }
    double rate = atof(argv[1]), seconds = atof(argv[2]);
    int port0 = atoi(argv[3]), nports = atoi(argv[4]);
    if (nports < 1 || nports > 64)
        return 2;
    int fds[64];
    for (int i = 0; i < nports; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(fds[i], SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        struct sockaddr_in a = addr(port0 + i);
        if (bind(fds[i], (struct sockaddr *)&a, sizeof(a)) || listen(fds[i], 4096)) {
            perror("listen");
            return 1;
        }
    }
    pid_t server = fork();
    if (server == 0)
        serve(fds, nports);
    for (int i = 0; i < nports; i++)
        close(fds[i]);
    char msg[64], buf[256];
    memset(msg, 'c', sizeof(msg));
    long done = 0, errors = 0;
    double t0 = now(), end = t0 + seconds;
    for (;;) {
        double t = now();
        if (t >= end)
            break;
        long due = (long)((t - t0) * rate);
        if (done + errors >= due) {
            struct timespec ts = {0, 200000};  /* 0.2 ms */
            nanosleep(&ts, NULL);
            continue;
        }
        int c = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = addr(port0 + (int)((done + errors) % nports));
        if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a))) {
            errors++;
            if (c >= 0)
                close(c);
            continue;
        }
        if (write(c, msg, sizeof(msg)) != (ssize_t)sizeof(msg)) {
            errors++;
            close(c);
            continue;
        }
        while (read(c, buf, sizeof(buf)) > 0) {
        }
        close(c);
        done++;
    }
    double took = now() - t0;
    kill(server, SIGTERM);
    waitpid(server, NULL, 0);
    printf("done %ld %ld %.3f\n", done, errors, took);
    return 0;
}
