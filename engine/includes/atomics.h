/* Atomics, CPU pause and futexes for the shared-memory event ring.
 *
 * Every atomic access in xos goes through this header (GCC/Clang __atomic
 * builtins).  The futex calls use the shared (non-private) operations because
 * the words live in memory mapped by several processes. */
#ifndef XOS_ATOMICS_H
#define XOS_ATOMICS_H
#include <stdint.h>
#include <errno.h>
#include <time.h>
#include <unistd.h>
#include <sched.h>
#include <sys/syscall.h>
#include <linux/futex.h>

static inline int64_t xos_load_acquire_64(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline int64_t xos_load_relaxed_64(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void xos_store_release_64(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void xos_store_seq_cst_64(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static inline int64_t xos_load_seq_cst_64(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline int xos_cas_64(int64_t *p, int64_t expected, int64_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

static inline int32_t xos_load_acquire_32(const int32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline int32_t xos_load_relaxed_32(const int32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void xos_store_release_32(int32_t *p, int32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void xos_store_seq_cst_32(int32_t *p, int32_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static inline int32_t xos_exchange_32(int32_t *p, int32_t v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
static inline int32_t xos_fetch_add_32(int32_t *p, int32_t v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
static inline int xos_cas_32(int32_t *p, int32_t expected, int32_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/* Full barrier: orders an earlier store before a later load (the
 * "set my sleeping flag, then re-check the cursor" handshake). */
static inline void xos_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

static inline void xos_cpu_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
#endif
}

static inline void xos_yield(void) { sched_yield(); }

static inline int64_t xos_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Sleep while *word == expected, at most timeout_ns (< 0: no limit).
 * Returns 0 when woken (or spuriously), -ETIMEDOUT, -EAGAIN (the word had
 * changed already) or -EINTR. */
static inline int xos_futex_wait_timeout(int32_t *word, int32_t expected, int64_t timeout_ns) {
    struct timespec ts, *tp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000);
        ts.tv_nsec = (long)(timeout_ns % 1000000000);
        tp = &ts;
    }
    long r = syscall(SYS_futex, word, FUTEX_WAIT, expected, tp, NULL, 0);
    return r == 0 ? 0 : -errno;
}

static inline int xos_futex_wait(int32_t *word, int32_t expected) {
    return xos_futex_wait_timeout(word, expected, -1);
}

/* Wake up to n sleepers on word; returns how many were woken (or -errno). */
static inline int xos_futex_wake(int32_t *word, int32_t n) {
    long r = syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0);
    return r >= 0 ? (int)r : -errno;
}

#endif
