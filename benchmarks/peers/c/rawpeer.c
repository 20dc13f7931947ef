/* Raw-socket framed request/reply peer: what loopback allows on this machine.
 *
 *   rawpeer server HOST PORT          prints the bound port, echoes frames
 *   rawpeer client HOST PORT CALLS INFLIGHT SIZE
 *                                     prints "calls_per_s X mb_per_s Y"
 *
 * A frame is a u32 big-endian length and that many bytes. The server answers
 * every frame with a frame of the same bytes; replies to all frames found in
 * one read go out in one write. The client keeps INFLIGHT requests of SIZE
 * payload bytes outstanding until CALLS replies have arrived.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) { perror(what); exit(1); }

static void write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k <= 0) die("write");
        p += k; n -= (size_t)k;
    }
}

static void *serve_conn(void *arg) {
    int fd = (int)(intptr_t)arg;
    size_t cap = 1 << 20, len = 0, ocap = 1 << 20;
    char *buf = malloc(cap), *out = malloc(ocap);
    for (;;) {
        if (cap - len < 65536) { cap *= 2; buf = realloc(buf, cap); }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n <= 0) break;
        len += (size_t)n;
        size_t pos = 0, olen = 0;
        while (len - pos >= 4) {
            uint32_t flen; memcpy(&flen, buf + pos, 4); flen = ntohl(flen);
            if (len - pos < 4 + (size_t)flen) break;
            if (olen + 4 + flen > ocap) { while (olen + 4 + flen > ocap) ocap *= 2; out = realloc(out, ocap); }
            memcpy(out + olen, buf + pos, 4 + flen);
            olen += 4 + flen; pos += 4 + flen;
        }
        if (olen) write_all(fd, out, olen);
        memmove(buf, buf + pos, len - pos); len -= pos;
    }
    close(fd); free(buf); free(out);
    return NULL;
}

static int run_server(const char *host, int port) {
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET; a.sin_port = htons(port); inet_pton(AF_INET, host, &a.sin_addr);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(ls, 128) < 0) die("listen");
    socklen_t al = sizeof a; getsockname(ls, (struct sockaddr *)&a, &al);
    printf("%d\n", ntohs(a.sin_port)); fflush(stdout);
    for (;;) {
        int fd = accept(ls, NULL, NULL);
        if (fd < 0) continue;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_t t; pthread_create(&t, NULL, serve_conn, (void *)(intptr_t)fd); pthread_detach(t);
    }
}

static double now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + ts.tv_nsec / 1e9; }

static int run_client(const char *host, int port, long calls, long inflight, long size) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET; a.sin_port = htons(port); inet_pton(AF_INET, host, &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    size_t frame = 4 + (size_t)size, batch = frame * (size_t)inflight;
    char *req = malloc(batch), *buf = malloc(batch + 65536);
    for (long i = 0; i < inflight; i++) {
        uint32_t l = htonl((uint32_t)size); memcpy(req + i * frame, &l, 4);
        memset(req + i * frame + 4, 'x', (size_t)size);
    }
    double start = now();
    long done = 0;
    while (done < calls) {
        write_all(fd, req, batch);
        size_t got = 0;
        while (got < batch) {
            ssize_t n = read(fd, buf, batch - got);
            if (n <= 0) die("read");
            got += (size_t)n;
        }
        done += inflight;
    }
    double secs = now() - start;
    printf("calls_per_s %.1f mb_per_s %.2f\n", done / secs, done * (double)size / secs / 1e6);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 4 && !strcmp(argv[1], "server")) return run_server(argv[2], atoi(argv[3]));
    if (argc >= 7 && !strcmp(argv[1], "client"))
        return run_client(argv[2], atoi(argv[3]), atol(argv[4]), atol(argv[5]), atol(argv[6]));
    fprintf(stderr, "usage: rawpeer server HOST PORT | client HOST PORT CALLS INFLIGHT SIZE\n");
    return 2;
}
