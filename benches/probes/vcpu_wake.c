/* How long a futex wake takes to run the woken thread, by where it sleeps: the figure
 * behind the syscall watcher (src/sched/sysmon.rs, "Nudge"). A measuring tool, not part of
 * gort; not built by cargo.
 *
 *   cc -O2 -pthread benches/probes/vcpu_wake.c -o /tmp/vcpu_wake
 *   /tmp/vcpu_wake 0 1 100000   # sleeper pinned to CPU 0, waker on CPU 1, 100 ms idle first
 *   /tmp/vcpu_wake 0 0 100000   # both on CPU 0
 *
 * Prints the median, min and max of 41 wakes (wake call -> first instruction of the woken
 * thread), then how long a 20 us nanosleep takes with 1 ns of timer slack. On the 2-vCPU VM
 * of BENCHMARKS.md: 85-130 us across idle vCPUs, ~17 us on the waker's own (which spins,
 * so the woken thread must preempt it), 37 us for the 20 us sleep. */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static _Atomic int word;
static _Atomic long t_run;
static int sleeper_cpu;

static long now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void pin(int cpu) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    sched_setaffinity(0, sizeof s, &s);
}

static void *sleeper(void *arg) {
    (void)arg;
    pin(sleeper_cpu);
    for (;;) {
        while (atomic_load(&word) == 0)
            syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
        atomic_store(&t_run, now());
        atomic_store(&word, 0);
    }
    return NULL;
}

static int cmp(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s sleeper-cpu waker-cpu idle-us\n", argv[0]);
        return 2;
    }
    sleeper_cpu = atoi(argv[1]);
    int waker_cpu = atoi(argv[2]);
    long idle_us = atol(argv[3]);
    pin(waker_cpu);
    pthread_t t;
    pthread_create(&t, NULL, sleeper, NULL);
    long r[41];
    for (int i = 0; i < 41; i++) {
        struct timespec idle = {idle_us / 1000000, (idle_us % 1000000) * 1000};
        nanosleep(&idle, NULL);
        atomic_store(&t_run, 0);
        long start = now();
        atomic_store(&word, 1);
        syscall(SYS_futex, &word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
        while (atomic_load(&t_run) == 0)
            ;
        r[i] = atomic_load(&t_run) - start;
    }
    qsort(r, 41, sizeof r[0], cmp);
    printf("wake of cpu%d from cpu%d after %ld us idle: median %.1f us, min %.1f, max %.1f\n",
           sleeper_cpu, waker_cpu, idle_us, r[20] / 1e3, r[0] / 1e3, r[40] / 1e3);
    prctl(PR_SET_TIMERSLACK, 1UL);
    for (int i = 0; i < 41; i++) {
        struct timespec idle = {0, 50000000}, d = {0, 20000};
        nanosleep(&idle, NULL);
        long start = now();
        nanosleep(&d, NULL);
        r[i] = now() - start;
    }
    qsort(r, 41, sizeof r[0], cmp);
    printf("20 us nanosleep after 50 ms idle (1 ns slack): median %.1f us\n", r[20] / 1e3);
    return 0;
}
