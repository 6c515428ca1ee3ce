/* sendmmsg(2) on a TCP socket, as test_shim_semantics.py compares it under lvlip and on the
 * kernel alone:
 *
 *   sendmmsg_stream HOST PORT      (PORT: an echo server)
 *
 * prints one JSON object: what sendmmsg returned (and errno) on a socket never connected, on a
 * connected one with messages that name the peer (TCP ignores the address), with the echo of
 * those messages, and after shutdown(SHUT_WR). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int send_three(int s, struct sockaddr_in *peer, unsigned *lengths) {
    static char a[] = "abc", b[] = "defg", c[] = "hi";
    struct iovec iov[3] = {{a, 3}, {b, 4}, {c, 2}};
    struct mmsghdr vec[3];
    memset(vec, 0, sizeof vec);
    for (int i = 0; i < 3; i++) {
        vec[i].msg_hdr.msg_iov = &iov[i];
        vec[i].msg_hdr.msg_iovlen = 1;
        vec[i].msg_hdr.msg_name = peer;
        vec[i].msg_hdr.msg_namelen = peer ? sizeof *peer : 0;
    }
    int r = sendmmsg(s, vec, 3, MSG_NOSIGNAL);
    for (int i = 0; i < 3; i++) lengths[i] = vec[i].msg_len;
    return r;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s HOST PORT\n", argv[0]);
        return 2;
    }
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &peer.sin_addr) != 1) return 2;
    unsigned lengths[3];

    int fresh = socket(AF_INET, SOCK_STREAM, 0);
    errno = 0;
    int r1 = send_three(fresh, NULL, lengths);
    int e1 = r1 < 0 ? errno : 0;

    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (fresh < 0 || s < 0 || connect(s, (struct sockaddr *)&peer, sizeof peer) < 0) {
        perror("socket/connect");
        return 1;
    }
    errno = 0;
    int r2 = send_three(s, &peer, lengths);
    int e2 = r2 < 0 ? errno : 0;
    char echo[16] = {0};
    size_t got = 0;
    while (r2 == 3 && got < 9) {
        ssize_t n = read(s, echo + got, 9 - got);
        if (n <= 0) break;
        got += (size_t)n;
    }

    shutdown(s, SHUT_WR);
    unsigned ignored[3];
    errno = 0;
    int r3 = send_three(s, NULL, ignored);
    int e3 = r3 < 0 ? errno : 0;
    printf("{\"unconnected\": [%d, %d], \"connected\": [%d, %d, [%u, %u, %u], \"%s\"], \"after_shutdown\": [%d, %d]}\n",
           r1, e1, r2, e2, lengths[0], lengths[1], lengths[2], echo, r3, e3);
    return 0;
}
