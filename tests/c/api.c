/* api.c: exercises every function of include/gort.h from C and checks what it does.
 * Built and run by tests/ffi.rs against libgort.a. Prints "api ok" and exits 0 on success;
 * any failed check prints the line and exits 1. `api badenv` expects gort_run to refuse a
 * malformed GOMAXPROCS. */
#define _GNU_SOURCE
#include <errno.h>
#include <fenv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gort.h"

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "api.c:%d: check failed: %s\n", __LINE__, #cond);           \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- ping-pong of ints over an unbuffered channel, closed by the sender ---- */

enum { N_MSG = 10000 };

struct producer {
    gort_chan *c;
    gort_wg *done; /* joins the producer: the channel is freed only after its last use */
};

static void producer(void *arg) {
    struct producer *p = arg;
    for (int i = 0; i < N_MSG; i++) CHECK(gort_chan_send(p->c, &i) == 0);
    CHECK(gort_chan_close(p->c) == 0);
    CHECK(gort_wg_done(p->done) == 0);
}

/* Receive N_MSG ints in order from a producer goroutine, then see the close. */
static void ping_pong(void) {
    struct producer p;
    CHECK(gort_chan_new(sizeof(int), 0, &p.c) == 0 && p.c != NULL);
    CHECK(gort_wg_new(&p.done) == 0 && gort_wg_add(p.done, 1) == 0);
    CHECK(gort_go(producer, &p) == 0);
    int v, expect = 0;
    while (gort_chan_recv(p.c, &v) == 0) {
        CHECK(v == expect);
        expect++;
    }
    CHECK(expect == N_MSG);
    CHECK(gort_chan_recv(p.c, &v) == -EPIPE);
    CHECK(gort_chan_close(p.c) == -EPIPE);
    CHECK(gort_chan_send(p.c, &v) == -EPIPE);
    CHECK(gort_wg_wait(p.done) == 0);
    CHECK(gort_chan_free(p.c) == 0);
    CHECK(gort_wg_free(p.done) == 0);
}

static void channels(void) {
    gort_chan *c = NULL;
    ping_pong();

    /* a buffered channel of 48-byte structs (larger than the inline slot) */
    struct big { uint64_t a[6]; } b, out;
    CHECK(gort_chan_new(sizeof b, 3, &c) == 0);
    for (uint64_t i = 0; i < 3; i++) {
        for (int k = 0; k < 6; k++) b.a[k] = i * 10 + (uint64_t)k;
        CHECK(gort_chan_try_send(c, &b) == 0);
    }
    CHECK(gort_chan_try_send(c, &b) == -EAGAIN);
    size_t len = 0;
    CHECK(gort_chan_len(c, &len) == 0 && len == 3);
    int64_t t0 = now_ns();
    CHECK(gort_chan_send_timeout(c, &b, 5000000) == -ETIMEDOUT);
    CHECK(now_ns() - t0 >= 5000000);
    for (uint64_t i = 0; i < 3; i++) {
        memset(&out, 0, sizeof out);
        CHECK(gort_chan_recv(c, &out) == 0);
        for (int k = 0; k < 6; k++) CHECK(out.a[k] == i * 10 + (uint64_t)k);
    }
    CHECK(gort_chan_try_recv(c, &out) == -EAGAIN);
    t0 = now_ns();
    CHECK(gort_chan_recv_timeout(c, &out, 5000000) == -ETIMEDOUT);
    CHECK(now_ns() - t0 >= 5000000);
    CHECK(gort_chan_close(c) == 0);
    CHECK(gort_chan_try_recv(c, &out) == -EPIPE);
    CHECK(gort_chan_free(c) == 0);

    /* zero-size elements: a signal channel */
    CHECK(gort_chan_new(0, 1, &c) == 0);
    CHECK(gort_chan_send(c, NULL) == 0);
    CHECK(gort_chan_recv(c, NULL) == 0);
    CHECK(gort_chan_free(c) == 0);
}

/* ---- a mutex-protected counter, 100 goroutines, joined by a wait group ---- */

enum { WORKERS = 100, INCS = 1000 };

struct counter {
    gort_mutex *mu;
    gort_wg *wg;
    long value;
};

static void worker(void *arg) {
    struct counter *c = arg;
    for (int i = 0; i < INCS; i++) {
        CHECK(gort_mutex_lock(c->mu) == 0);
        long v = c->value;
        if (i % 100 == 0) gort_yield(); /* hold the lock across a switch now and then */
        c->value = v + 1;
        CHECK(gort_mutex_unlock(c->mu) == 0);
    }
    CHECK(gort_wg_done(c->wg) == 0);
}

static void sync_primitives(void) {
    struct counter c = {0};
    CHECK(gort_mutex_new(&c.mu) == 0);
    CHECK(gort_wg_new(&c.wg) == 0);
    CHECK(gort_wg_add(c.wg, WORKERS) == 0);
    for (int i = 0; i < WORKERS; i++) CHECK(gort_go(worker, &c) == 0);
    CHECK(gort_wg_wait(c.wg) == 0);
    CHECK(c.value == (long)WORKERS * INCS);

    CHECK(gort_wg_add(c.wg, -1) == -EINVAL); /* counter would go below zero */
    CHECK(gort_wg_done(c.wg) == -EINVAL);
    CHECK(gort_wg_wait(c.wg) == 0);          /* zero: returns at once */

    CHECK(gort_mutex_trylock(c.mu) == 0);
    CHECK(gort_mutex_trylock(c.mu) == -EBUSY);
    CHECK(gort_mutex_free(c.mu) == -EBUSY);
    CHECK(gort_mutex_unlock(c.mu) == 0);
    CHECK(gort_mutex_unlock(c.mu) == -EPERM);
    CHECK(gort_mutex_free(c.mu) == 0);
    CHECK(gort_wg_free(c.wg) == 0);
}

/* ---- each C goroutine keeps its own rounding mode across switches and migrations ---- */

struct fp {
    int mode;
    gort_wg *wg;
    int ok;
};

static void fp_keeper(void *arg) {
    struct fp *f = arg;
    CHECK(fegetround() == FE_TONEAREST); /* a new goroutine starts with the defaults */
    CHECK(fesetround(f->mode) == 0);
    f->ok = 1;
    for (int i = 0; i < 5000; i++) {
        gort_yield();
        if (fegetround() != f->mode) f->ok = 0;
    }
    fesetround(FE_TONEAREST);
    CHECK(gort_wg_done(f->wg) == 0);
}

static void fp_control(void) {
    static const int modes[] = {FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO, FE_TONEAREST};
    struct fp f[8];
    gort_wg *wg;
    CHECK(gort_wg_new(&wg) == 0);
    CHECK(gort_wg_add(wg, 8) == 0);
    for (int i = 0; i < 8; i++) {
        f[i].mode = modes[i % 4];
        f[i].wg = wg;
        f[i].ok = 0;
        CHECK(gort_go(fp_keeper, &f[i]) == 0);
    }
    CHECK(gort_wg_wait(wg) == 0);
    for (int i = 0; i < 8; i++) CHECK(f[i].ok == 1);
    CHECK(gort_wg_free(wg) == 0);
}

/* ---- everything else ---- */

static void blocking_sleep(void *arg) {
    struct timespec ts = {0, 1000000}; /* a C library call that blocks in the kernel */
    nanosleep(&ts, NULL);
    *(int *)arg += 1;
}

static void misc(void) {
    CHECK(gort_current_id() != 0);
    int calls = 0;
    CHECK(gort_syscall(blocking_sleep, &calls) == 0 && calls == 1);
    CHECK(gort_syscall(NULL, NULL) == -EINVAL);
    gort_lock_os_thread();
    gort_lock_os_thread();
    gort_unlock_os_thread();
    gort_yield();
    gort_unlock_os_thread();
    gort_unlock_os_thread(); /* without a lock: no-op */
    CHECK(gort_sleep_ns(-1) == -EINVAL);
    int64_t t0 = now_ns();
    CHECK(gort_sleep_ns(2000000) == 0);
    CHECK(now_ns() - t0 >= 2000000);

    int old = 0;
    CHECK(gort_set_max_procs(0, &old) == 0 && old >= 1);
    CHECK(gort_set_max_procs(-1, &old) == -EINVAL);
    CHECK(gort_set_max_procs(100000, NULL) == -EINVAL);

    gort_stats_t st;
    CHECK(gort_stats(&st) == 0);
    CHECK(st.procs == (uint64_t)old && st.spawned >= WORKERS && st.goroutines >= 1);
    size_t needed = 0;
    char small[4] = {'x', 'x', 'x', 'x'};
    CHECK(gort_stats_text(small, sizeof small, &needed) == -ERANGE && needed > sizeof small);
    CHECK(small[0] == 'x');
    char *buf = malloc(needed);
    CHECK(buf != NULL && gort_stats_text(buf, needed, NULL) == 0);
    CHECK(strlen(buf) + 1 == needed && strstr(buf, "procs=") != NULL);
    free(buf);
}

static void nulls(void) {
    CHECK(gort_run(NULL, NULL) == -EINVAL);
    CHECK(gort_go(NULL, NULL) == -EINVAL);
    CHECK(gort_chan_new(4, 0, NULL) == -EINVAL);
    int x = 0;
    CHECK(gort_chan_send(NULL, &x) == -EINVAL);
    CHECK(gort_chan_recv(NULL, &x) == -EINVAL);
    CHECK(gort_chan_close(NULL) == -EINVAL);
    CHECK(gort_chan_free(NULL) == -EINVAL);
    gort_chan *c;
    CHECK(gort_chan_new(4, 1, &c) == 0);
    CHECK(gort_chan_send(c, NULL) == -EINVAL); /* 4-byte elements need a pointer */
    CHECK(gort_chan_recv(c, NULL) == -EINVAL);
    CHECK(gort_chan_len(c, NULL) == -EINVAL);
    CHECK(gort_chan_send_timeout(c, &x, -1) == -EINVAL);
    CHECK(gort_chan_free(c) == 0);
    CHECK(gort_wg_new(NULL) == -EINVAL);
    CHECK(gort_wg_add(NULL, 1) == -EINVAL);
    CHECK(gort_wg_wait(NULL) == -EINVAL);
    CHECK(gort_mutex_new(NULL) == -EINVAL);
    CHECK(gort_mutex_lock(NULL) == -EINVAL);
    CHECK(gort_mutex_unlock(NULL) == -EINVAL);
    CHECK(gort_stats(NULL) == -EINVAL);
}

static void root(void *arg) {
    int *done = arg;
    channels();
    sync_primitives();
    fp_control();
    misc();
    *done = 1;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "badenv") == 0) {
        int done = 0;
        int rc = gort_run(root, &done);
        printf("gort_run returned %d\n", rc);
        return rc == -EINVAL && !done ? 0 : 1;
    }
    CHECK(gort_current_id() == 0); /* a plain thread */
    nulls();
    int done = 0;
    CHECK(gort_run(root, &done) == 0 && done == 1);
    /* the C API from a plain thread: channels and wait groups block it, goroutines run */
    ping_pong();
    puts("api ok");
    return 0;
}
