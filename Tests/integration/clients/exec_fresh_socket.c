/* Makes a fresh TCP socket (its SOCKET and a TCP_NODELAY held back by the shim) and starts a
 * program that uses it, through one of libc's list forms of exec (test_held_requests.py):
 *
 *   exec_fresh_socket FORM PYTHON SCRIPT HOST PORT     FORM: execl, execlp or execle
 *
 * runs PYTHON -c SCRIPT FD HOST PORT FORM with the socket as FD (execlp finds "python3" on
 * the PATH). */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s FORM PYTHON SCRIPT HOST PORT\n", argv[0]);
        return 2;
    }
    const char *form = argv[1], *python = argv[2], *script = argv[3], *host = argv[4], *port = argv[5];
    /* A process's first socket waits for its SOCKET reply; later ones are held back. */
    int first = socket(AF_INET, SOCK_STREAM, 0);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    if (first < 0 || s < 0 || setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) {
        perror("socket");
        return 1;
    }
    char fd[16];
    snprintf(fd, sizeof fd, "%d", s);
    if (strcmp(form, "execl") == 0) execl(python, python, "-c", script, fd, host, port, form, (char *)NULL);
    if (strcmp(form, "execlp") == 0) execlp("python3", "python3", "-c", script, fd, host, port, form, (char *)NULL);
    if (strcmp(form, "execle") == 0) execle(python, python, "-c", script, fd, host, port, form, (char *)NULL, environ);
    perror(form);
    return 1;
}
