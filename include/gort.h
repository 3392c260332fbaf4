/*
 * gort.h: the C API of gort, Go's goroutine scheduler (G/M/P) as a library.
 *
 * Link:   cc prog.c -Ipath/to/gort/include path/to/libgort.a -lpthread -ldl -lm
 *         (libgort.a is built by `cargo build --release`, in target/release/).
 *
 * Conventions
 *   - Functions return 0 on success or a negative errno value:
 *       -EINVAL     a NULL pointer or an invalid argument
 *       -EPIPE      the channel is closed (and, for receives, drained)
 *       -EAGAIN     a try_ operation would have to wait
 *       -ETIMEDOUT  a timed operation ran out of time
 *       -EBUSY      a mutex is held (trylock, free)
 *       -EPERM      unlock of an unlocked mutex
 *       -ERANGE     a buffer is too small
 *       -ENOMEM, -EAGAIN   no stack or thread can be had for a goroutine
 *       -ENOTRECOVERABLE   an internal error; a message went to stderr
 *   - Out-parameters are written only on success.
 *   - Objects come in _new/_free pairs; freeing one that another goroutine still uses is
 *     undefined behaviour (as for pthread_mutex_destroy).
 *   - Every call may be made from a goroutine (it parks the goroutine, not its thread) or
 *     from a plain thread (it blocks the thread).
 *   - The runtime is created on first use from the environment: GOMAXPROCS, GORT_STACK_KB,
 *     GORT_PIN, GORT_PREEMPT, GORT_QUANTUM_US. A malformed value makes gort_run/gort_go
 *     fail with -EINVAL and a message naming the variable.
 *   - Goroutines started from C own their floating-point environment (fesetround and the
 *     exception masks survive switches, as the ABI requires across calls).
 */
#ifndef GORT_H
#define GORT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- goroutines --------------------------------------------------------------------- */

/* A goroutine body. */
typedef void (*gort_fn)(void *arg);

/* Run f(arg) as a goroutine on the default runtime; return when it has returned. */
int gort_run(gort_fn f, void *arg);

/* Start f(arg) as a goroutine and return at once (join it with a wait group or a channel). */
int gort_go(gort_fn f, void *arg);

/* Let other goroutines run. */
void gort_yield(void);

/* Sleep at least ns nanoseconds (-EINVAL if ns < 0). */
int gort_sleep_ns(int64_t ns);

/* Run f(arg), which may block in the kernel (a blocking read, a C library call), without
   stalling other goroutines: the caller's scheduling context goes to another thread if f
   lasts (Go's entersyscall/exitsyscall). On a plain thread, just calls f. -EINVAL if f is
   NULL. errno is per thread and the goroutine may continue on another thread after the
   call: read errno inside f (store it through arg). */
int gort_syscall(gort_fn f, void *arg);

/* Wire the calling goroutine to its OS thread until a matching gort_unlock_os_thread (calls
   nest; Go's runtime.LockOSThread). No-op on a plain thread. */
void gort_lock_os_thread(void);

/* Undo one gort_lock_os_thread (no-op without one). */
void gort_unlock_os_thread(void);

/* The calling goroutine's id (unique, never 0), or 0 on a plain thread. */
uint64_t gort_current_id(void);

/* Set GOMAXPROCS to n (1..1024; 0 only queries); the previous value goes to *old if old is
 * not NULL. */
int gort_set_max_procs(int n, int *old);

/* ---- channels (Go's chan T for a C type T of elem_size bytes) ------------------------- */

typedef struct gort_chan gort_chan;

/* A channel of elem_size-byte elements holding up to cap of them (cap 0: unbuffered, each
 * send waits for its receiver). elem_size may be 0 (element pointers may then be NULL). */
int gort_chan_new(size_t elem_size, size_t cap, gort_chan **out);
int gort_chan_free(gort_chan *c);

/* Send a copy of *elem. */
int gort_chan_send(const gort_chan *c, const void *elem);
int gort_chan_try_send(const gort_chan *c, const void *elem);
int gort_chan_send_timeout(const gort_chan *c, const void *elem, int64_t timeout_ns);

/* Receive into *out. */
int gort_chan_recv(const gort_chan *c, void *out);
int gort_chan_try_recv(const gort_chan *c, void *out);
int gort_chan_recv_timeout(const gort_chan *c, void *out, int64_t timeout_ns);

/* Close: senders get -EPIPE; receivers drain the buffer, then get -EPIPE. -EPIPE if it was
 * already closed. */
int gort_chan_close(const gort_chan *c);

/* Elements buffered now. */
int gort_chan_len(const gort_chan *c, size_t *len);

/* ---- wait groups and mutexes (Go's sync.WaitGroup and sync.Mutex) -------------------- */

typedef struct gort_wg gort_wg;

int gort_wg_new(gort_wg **out);
int gort_wg_free(gort_wg *wg);
/* -EINVAL, counter unchanged, if it would go below zero. */
int gort_wg_add(const gort_wg *wg, int delta);
int gort_wg_done(const gort_wg *wg);
int gort_wg_wait(const gort_wg *wg);

typedef struct gort_mutex gort_mutex;

int gort_mutex_new(gort_mutex **out);
/* -EBUSY (not freed) while locked. */
int gort_mutex_free(gort_mutex *m);
int gort_mutex_lock(const gort_mutex *m);
int gort_mutex_trylock(const gort_mutex *m);
/* Any goroutine may unlock (as in Go); -EPERM if it is not locked. */
int gort_mutex_unlock(const gort_mutex *m);

/* ---- statistics ------------------------------------------------------------------------ */

/* Fields are only ever appended. */
typedef struct gort_stats_t {
    uint64_t procs;         /* GOMAXPROCS */
    uint64_t goroutines;    /* spawned and not finished */
    uint64_t spawned;
    uint64_t completed;
    uint64_t yields;
    uint64_t parks;
    uint64_t steals;
    uint64_t timers_run;
    uint64_t threads;       /* OS threads (Ms) created */
    uint64_t stacks_mapped; /* process-wide */
} gort_stats_t;

int gort_stats(gort_stats_t *out);

/* The runtime's one-screen summary, NUL-terminated, if it fits in len bytes (else -ERANGE,
 * buffer untouched); *needed (if not NULL) gets the size it takes. */
int gort_stats_text(char *buf, size_t len, size_t *needed);

#ifdef __cplusplus
}
#endif

#endif /* GORT_H */
