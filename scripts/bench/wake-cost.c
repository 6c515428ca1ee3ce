/*
 * What waking a sleeping thread costs on this machine: two processes bounce one byte over
 * a pair of pipes, each blocking in read() until the other writes, first both on one CPU,
 * then on two. The round trip is two wake-ups; across CPUs each is an inter-processor
 * interrupt to a CPU that may be halted (in a virtual machine, an exit to the hypervisor).
 * This is the cost lvlipd's busy polling avoids (docs/architecture.md).
 *
 *   scripts/bench/wake-cost [ROUNDS]        (a shell wrapper compiles and runs this)
 *
 * Needs two CPUs in its affinity for the second figure. No network.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) < 0) {
        perror("sched_setaffinity");
        exit(1);
    }
}

static double round_trip_us(int cpu_a, int cpu_b, int rounds) {
    int there[2], back[2];
    if (pipe(there) < 0 || pipe(back) < 0) {
        perror("pipe");
        exit(1);
    }
    char byte = 0;
    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        exit(1);
    }
    if (child == 0) {
        pin(cpu_b);
        for (int i = 0; i < rounds; i++) {
            if (read(there[0], &byte, 1) != 1 || write(back[1], &byte, 1) != 1) _exit(1);
        }
        _exit(0);
    }
    pin(cpu_a);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < rounds; i++) {
        if (write(there[1], &byte, 1) != 1 || read(back[0], &byte, 1) != 1) {
            perror("ping-pong");
            exit(1);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    waitpid(child, NULL, 0);
    for (int i = 0; i < 2; i++) {
        close(there[i]);
        close(back[i]);
    }
    return ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / rounds / 1000.0;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 100000;
    if (rounds < 1 || rounds > 10000000) {
        fprintf(stderr, "usage: wake-cost [ROUNDS 1..10000000]\n");
        return 64;
    }
    cpu_set_t mine;
    if (sched_getaffinity(0, sizeof mine, &mine) < 0) {
        perror("sched_getaffinity");
        return 1;
    }
    int first = -1, second = -1;
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (!CPU_ISSET(c, &mine)) continue;
        if (first < 0) first = c; else if (second < 0) second = c;
    }
    printf("one CPU (%d):        %.2f us per round trip (two wake-ups)\n", first, round_trip_us(first, first, rounds));
    if (second < 0) {
        printf("two CPUs: only one CPU in this process's affinity\n");
        return 0;
    }
    printf("two CPUs (%d and %d): %.2f us per round trip (two wake-ups)\n", first, second,
           round_trip_us(first, second, rounds));
    return 0;
}
