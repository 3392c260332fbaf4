/* asm/harness/switch_harness.c: checks asm/<arch>/switch.S from C, without Rust.
 *
 * A fallback proof that the assembly is right on an architecture whose Rust target is not
 * at hand: .ci/asm-harness.sh <arch> assembles switch.S with the offsets of
 * src/arch/offsets.rs (as -D definitions, exactly as build.rs passes them), links it with
 * this file and runs it (under qemu-aarch64 for aarch64 on an x86_64 host).
 *
 * What it checks, mirroring the Rust unit tests in src/arch:
 *   1. ping-pong: 100000 round trips between main() and a context on an mmap'd stack,
 *      passing values both ways through gort_switch and checking each;
 *   2. register preservation: both sides load distinct patterns into every callee-saved
 *      register and a non-default FP control mode (both contexts own their FP control),
 *      switch, and check that exactly their own values came back, 20000 times;
 *   3. a context that does not own its FP control starts with the defaults even when
 *      switched to from one running a non-default mode.
 * Exit status 0 on success; otherwise the first failure is printed and the status is 1.
 */

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define STR(x) #x
#define XSTR(x) STR(x)

/* ---- the Context layout, mirrored and checked against the offsets --------------------- */

#if defined(__x86_64__)
struct context {
    uint64_t rsp, pc, rbx, rbp, r12, r13, r14, r15;
    uint32_t mxcsr;
    uint16_t x87cw;
    uint16_t flags;
};
_Static_assert(offsetof(struct context, rsp) == CTX_RSP, "CTX_RSP");
_Static_assert(offsetof(struct context, pc) == CTX_PC, "CTX_PC");
_Static_assert(offsetof(struct context, rbx) == CTX_RBX, "CTX_RBX");
_Static_assert(offsetof(struct context, rbp) == CTX_RBP, "CTX_RBP");
_Static_assert(offsetof(struct context, r12) == CTX_R12, "CTX_R12");
_Static_assert(offsetof(struct context, r13) == CTX_R13, "CTX_R13");
_Static_assert(offsetof(struct context, r14) == CTX_R14, "CTX_R14");
_Static_assert(offsetof(struct context, r15) == CTX_R15, "CTX_R15");
_Static_assert(offsetof(struct context, mxcsr) == CTX_MXCSR, "CTX_MXCSR");
_Static_assert(offsetof(struct context, x87cw) == CTX_X87CW, "CTX_X87CW");
_Static_assert(offsetof(struct context, flags) == CTX_FLAGS, "CTX_FLAGS");
_Static_assert(sizeof(struct context) == CTX_SIZE, "CTX_SIZE");

/* Callee-saved registers and FP control, as the helper below loads and records them. */
#define NREGS 6
struct regs {
    uint64_t r[NREGS]; /* rbx rbp r12 r13 r14 r15 */
    uint32_t mxcsr;
    uint16_t x87cw;
    uint16_t pad;
};
#define P_LOAD 0
#define P_SEEN 56
#define R_MXCSR 48
#define R_X87CW 52

static void init_context(struct context *c, void *top, void (*entry)(uintptr_t), uintptr_t arg)
{
    extern char gort_goroutine_entry[];
    memset(c, 0, sizeof *c);
    c->rsp = (uintptr_t)top & ~(uintptr_t)15;
    c->pc = (uintptr_t)gort_goroutine_entry;
    c->rbx = (uintptr_t)entry;
    c->r12 = arg;
}

static void own_fp_control(struct context *c)
{
    c->mxcsr = MXCSR_DEFAULT;
    c->x87cw = X87CW_DEFAULT;
    c->flags |= FLAG_OWNS_FP_CONTROL;
}

/* Only MXCSR's control bits are preserved; bits 0-5 are caller-saved status flags. */
static int same_control(const struct regs *a, const struct regs *b)
{
    return memcmp(a->r, b->r, sizeof a->r) == 0 && (a->mxcsr & ~0x3fu) == (b->mxcsr & ~0x3fu) &&
           a->x87cw == b->x87cw;
}

static void set_fp_mode(struct regs *r, uint64_t mode)
{
    r->mxcsr = MXCSR_DEFAULT | (uint32_t)(mode & 3) << 13 | ((mode & 4) ? 0x8040u : 0);
    r->x87cw = (uint16_t)(X87CW_DEFAULT | ((mode >> 3) & 3) << 10);
}

static uint32_t current_fp_control(void)
{
    uint32_t mxcsr;
    __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
    return mxcsr & ~0x3fu;
}
#define FP_DEFAULT_CONTROL MXCSR_DEFAULT

/* uintptr_t switch_with_regs(from, to, val, probe): save the real callee-saved registers
 * and FP control, load probe->load, gort_switch(from, to, val), store what the registers
 * hold afterwards into probe->seen, restore everything, return gort_switch's result. */
__asm__(
    ".intel_syntax noprefix\n"
    ".text\n"
    ".p2align 4\n"
    "switch_with_regs:\n"
    "  push rbp\n  push rbx\n  push r12\n  push r13\n  push r14\n  push r15\n"
    "  sub rsp, 24\n"
    "  stmxcsr [rsp]\n  fnstcw [rsp + 4]\n  mov [rsp + 8], rcx\n"
    "  ldmxcsr [rcx + " XSTR(R_MXCSR) "]\n  fldcw [rcx + " XSTR(R_X87CW) "]\n"
    "  mov rbx, [rcx + 0]\n  mov rbp, [rcx + 8]\n  mov r12, [rcx + 16]\n"
    "  mov r13, [rcx + 24]\n  mov r14, [rcx + 32]\n  mov r15, [rcx + 40]\n"
    "  call gort_switch\n"
    "  mov rcx, [rsp + 8]\n"
    "  mov [rcx + " XSTR(P_SEEN) " + 0], rbx\n  mov [rcx + " XSTR(P_SEEN) " + 8], rbp\n"
    "  mov [rcx + " XSTR(P_SEEN) " + 16], r12\n  mov [rcx + " XSTR(P_SEEN) " + 24], r13\n"
    "  mov [rcx + " XSTR(P_SEEN) " + 32], r14\n  mov [rcx + " XSTR(P_SEEN) " + 40], r15\n"
    "  stmxcsr [rcx + " XSTR(P_SEEN) " + " XSTR(R_MXCSR) "]\n"
    "  fnstcw [rcx + " XSTR(P_SEEN) " + " XSTR(R_X87CW) "]\n"
    "  ldmxcsr [rsp]\n  fldcw [rsp + 4]\n"
    "  add rsp, 24\n"
    "  pop r15\n  pop r14\n  pop r13\n  pop r12\n  pop rbx\n  pop rbp\n"
    "  ret\n"
    ".att_syntax prefix\n");

#elif defined(__aarch64__)
struct context {
    uint64_t x19, x20, x21, x22, x23, x24, x25, x26, x27, x28;
    uint64_t fp, lr, sp;
    uint32_t fpcr, flags;
    uint64_t d8, d9, d10, d11, d12, d13, d14, d15;
};
_Static_assert(offsetof(struct context, x19) == CTX_X19, "CTX_X19");
_Static_assert(offsetof(struct context, x20) == CTX_X20, "CTX_X20");
_Static_assert(offsetof(struct context, x21) == CTX_X21, "CTX_X21");
_Static_assert(offsetof(struct context, x23) == CTX_X23, "CTX_X23");
_Static_assert(offsetof(struct context, x25) == CTX_X25, "CTX_X25");
_Static_assert(offsetof(struct context, x27) == CTX_X27, "CTX_X27");
_Static_assert(offsetof(struct context, fp) == CTX_FP, "CTX_FP");
_Static_assert(offsetof(struct context, lr) == CTX_LR, "CTX_LR");
_Static_assert(offsetof(struct context, sp) == CTX_SP, "CTX_SP");
_Static_assert(offsetof(struct context, fpcr) == CTX_FPCR, "CTX_FPCR");
_Static_assert(offsetof(struct context, flags) == CTX_FLAGS, "CTX_FLAGS");
_Static_assert(offsetof(struct context, d8) == CTX_D8, "CTX_D8");
_Static_assert(offsetof(struct context, d10) == CTX_D10, "CTX_D10");
_Static_assert(offsetof(struct context, d12) == CTX_D12, "CTX_D12");
_Static_assert(offsetof(struct context, d14) == CTX_D14, "CTX_D14");
_Static_assert(sizeof(struct context) == CTX_SIZE, "CTX_SIZE");

#define NREGS 19
struct regs {
    uint64_t r[NREGS]; /* x19..x29, d8..d15 */
    uint32_t fpcr;
    uint32_t pad;
};
#define P_LOAD 0
#define P_SEEN 160
#define R_FPCR 152

static void init_context(struct context *c, void *top, void (*entry)(uintptr_t), uintptr_t arg)
{
    extern char gort_goroutine_entry[];
    memset(c, 0, sizeof *c);
    c->sp = (uintptr_t)top & ~(uintptr_t)15;
    c->lr = (uintptr_t)gort_goroutine_entry;
    c->x19 = (uintptr_t)entry;
    c->x20 = arg;
}

static void own_fp_control(struct context *c)
{
    c->fpcr = FPCR_DEFAULT;
    c->flags |= FLAG_OWNS_FP_CONTROL;
}

static int same_control(const struct regs *a, const struct regs *b)
{
    return memcmp(a->r, b->r, sizeof a->r) == 0 && a->fpcr == b->fpcr;
}

static void set_fp_mode(struct regs *r, uint64_t mode)
{
    r->fpcr = (uint32_t)((mode & 3) << 22 | ((mode >> 2) & 1) << 24 | ((mode >> 3) & 1) << 25);
}

static uint32_t current_fp_control(void)
{
    uint64_t fpcr;
    __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    return (uint32_t)fpcr;
}
#define FP_DEFAULT_CONTROL FPCR_DEFAULT

__asm__(
    ".text\n"
    ".p2align 4\n"
    "switch_with_regs:\n"
    "  stp x29, x30, [sp, #-176]!\n"
    "  stp x19, x20, [sp, #16]\n  stp x21, x22, [sp, #32]\n  stp x23, x24, [sp, #48]\n"
    "  stp x25, x26, [sp, #64]\n  stp x27, x28, [sp, #80]\n"
    "  stp d8, d9, [sp, #96]\n  stp d10, d11, [sp, #112]\n"
    "  stp d12, d13, [sp, #128]\n  stp d14, d15, [sp, #144]\n"
    "  mrs x9, fpcr\n  stp x9, x3, [sp, #160]\n"
    "  ldr w9, [x3, #" XSTR(R_FPCR) "]\n  msr fpcr, x9\n"
    "  ldp x19, x20, [x3, #0]\n  ldp x21, x22, [x3, #16]\n  ldp x23, x24, [x3, #32]\n"
    "  ldp x25, x26, [x3, #48]\n  ldp x27, x28, [x3, #64]\n  ldr x29, [x3, #80]\n"
    "  ldp d8, d9, [x3, #88]\n  ldp d10, d11, [x3, #104]\n"
    "  ldp d12, d13, [x3, #120]\n  ldp d14, d15, [x3, #136]\n"
    "  bl gort_switch\n"
    "  ldr x3, [sp, #168]\n"
    "  add x3, x3, #" XSTR(P_SEEN) "\n"
    "  stp x19, x20, [x3, #0]\n  stp x21, x22, [x3, #16]\n  stp x23, x24, [x3, #32]\n"
    "  stp x25, x26, [x3, #48]\n  stp x27, x28, [x3, #64]\n  str x29, [x3, #80]\n"
    "  stp d8, d9, [x3, #88]\n  stp d10, d11, [x3, #104]\n"
    "  stp d12, d13, [x3, #120]\n  stp d14, d15, [x3, #136]\n"
    "  mrs x9, fpcr\n  str w9, [x3, #" XSTR(R_FPCR) "]\n"
    "  ldr x9, [sp, #160]\n  msr fpcr, x9\n"
    "  ldp x19, x20, [sp, #16]\n  ldp x21, x22, [sp, #32]\n  ldp x23, x24, [sp, #48]\n"
    "  ldp x25, x26, [sp, #64]\n  ldp x27, x28, [sp, #80]\n"
    "  ldp d8, d9, [sp, #96]\n  ldp d10, d11, [sp, #112]\n"
    "  ldp d12, d13, [sp, #128]\n  ldp d14, d15, [sp, #144]\n"
    "  ldp x29, x30, [sp], #176\n"
    "  ret\n");

#else
#error "switch_harness.c: x86_64 and aarch64 only"
#endif

struct probe {
    struct regs load, seen;
};
_Static_assert(offsetof(struct probe, load) == P_LOAD, "P_LOAD");
_Static_assert(offsetof(struct probe, seen) == P_SEEN, "P_SEEN");

extern uintptr_t gort_switch(struct context *from, const struct context *to, uintptr_t val);
uintptr_t switch_with_regs(struct context *from, const struct context *to, uintptr_t val,
                           struct probe *probe);

/* ---- shared state ---------------------------------------------------------------------- */

static struct context main_ctx, co_ctx;
static struct probe co_probe;
static uint64_t co_bad_round = UINT64_MAX; /* first round the context saw a change */
static uint32_t co_initial_fp;

#define DONE UINTPTR_MAX

static int fail(const char *what, uint64_t round)
{
    fprintf(stderr, "switch_harness: FAIL: %s (round %llu)\n", what, (unsigned long long)round);
    return 1;
}

static void fill(struct regs *r, uint64_t side, uint64_t round)
{
    uint64_t base = side << 60 ^ round * 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < NREGS; i++)
        r->r[i] = base ^ (0x1111ull * (uint64_t)(i + 1));
    uint64_t mode = round % 4 == 3 ? 0 : (side ^ round) * 0x9e3779b97f4a7c15ull >> 59;
    set_fp_mode(r, mode);
}

static void *new_stack(size_t size)
{
    char *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
        perror("switch_harness: mmap");
        exit(1);
    }
    return base + size;
}

/* 1. answers v with 3v + 1 until DONE */
static __attribute__((noreturn)) void triple_plus_one(uintptr_t arg)
{
    (void)arg;
    uintptr_t v = gort_switch(&co_ctx, &main_ctx, 1);
    while (v != DONE)
        v = gort_switch(&co_ctx, &main_ctx, 3 * v + 1);
    for (;;)
        gort_switch(&co_ctx, &main_ctx, DONE);
}

/* 2. holds its own register patterns across every switch */
static __attribute__((noreturn)) void register_side(uintptr_t arg)
{
    (void)arg;
    co_initial_fp = current_fp_control();
    uint64_t round = 0;
    for (;;) {
        fill(&co_probe.load, 2, round);
        uintptr_t got = switch_with_regs(&co_ctx, &main_ctx, (uintptr_t)round * 2 + 1, &co_probe);
        if (!same_control(&co_probe.seen, &co_probe.load) && co_bad_round == UINT64_MAX)
            co_bad_round = round;
        round = got;
    }
}

/* 3. records the FP control it starts with */
static __attribute__((noreturn)) void observer(uintptr_t arg)
{
    (void)arg;
    co_initial_fp = current_fp_control();
    for (;;)
        gort_switch(&co_ctx, &main_ctx, 0);
}

int main(void)
{
    void *top = new_stack(256 * 1024);

    /* 1. ping-pong */
    memset(&main_ctx, 0, sizeof main_ctx);
    init_context(&co_ctx, top, triple_plus_one, 0);
    if (gort_switch(&main_ctx, &co_ctx, 12345) != 1)
        return fail("ping-pong: first value", 0);
    for (uintptr_t i = 0; i < 100000; i++)
        if (gort_switch(&main_ctx, &co_ctx, i) != 3 * i + 1)
            return fail("ping-pong: value", i);
    if (gort_switch(&main_ctx, &co_ctx, DONE) != DONE)
        return fail("ping-pong: DONE", 0);

    /* 2. register preservation */
    struct probe probe;
    memset(&main_ctx, 0, sizeof main_ctx);
    init_context(&co_ctx, top, register_side, 0);
    own_fp_control(&main_ctx);
    own_fp_control(&co_ctx);
    for (uint64_t round = 0; round < 20000; round++) {
        fill(&probe.load, 1, round);
        uintptr_t got = switch_with_regs(&main_ctx, &co_ctx, (uintptr_t)round, &probe);
        if (got != (uintptr_t)round * 2 + 1)
            return fail("registers: value", round);
        if (!same_control(&probe.seen, &probe.load))
            return fail("registers: main's registers changed", round);
        if (co_bad_round != UINT64_MAX)
            return fail("registers: the context's registers changed", co_bad_round);
        if (round == 0 && co_initial_fp != FP_DEFAULT_CONTROL)
            return fail("registers: fresh owning context did not start with default FP control", 0);
    }

    /* 3. a non-owning context runs with the default FP control */
    memset(&main_ctx, 0, sizeof main_ctx);
    init_context(&co_ctx, top, observer, 0);
    own_fp_control(&main_ctx);
    co_initial_fp = ~0u;
    fill(&probe.load, 1, 5);
    set_fp_mode(&probe.load, 0x1b); /* non-default rounding in every FP control word */
    switch_with_regs(&main_ctx, &co_ctx, 0, &probe);
    if (co_initial_fp != FP_DEFAULT_CONTROL)
        return fail("non-owning context saw a non-default FP control", 0);
    if (!same_control(&probe.seen, &probe.load))
        return fail("owning context lost its FP control", 0);

    printf("switch_harness: ok (ping-pong 100000, registers 20000, fp ownership)\n");
    return 0;
}
