/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI,
 * ext4 and most log formats.  xos_crc32c(0, "123456789", 9) == 0xE3069283.
 *
 * The crc argument is a previous result (0 to start), so a buffer may be
 * checksummed in pieces: xos_crc32c(xos_crc32c(0, a, na), b, nb) equals the
 * CRC of a followed by b.  On x86-64 the SSE4.2 crc32 instruction is used when
 * the CPU has it (checked once at run time; the function is compiled with a
 * target attribute, so no -msse4.2 is needed), else slicing-by-8 tables. */
#ifndef XOS_CRC32C_H
#define XOS_CRC32C_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define XOS_CRC32C_POLY 0x82F63B78u

static uint32_t xos_crc32c_table[8][256];
static volatile int xos_crc32c_table_ready = 0;

/* Idempotent, so a race between two first callers only computes it twice. */
static void xos_crc32c_init_table(void) {
    uint32_t i, j, c;
    for (i = 0; i < 256; i++) {
        c = i;
        for (j = 0; j < 8; j++) c = (c & 1) ? (c >> 1) ^ XOS_CRC32C_POLY : c >> 1;
        xos_crc32c_table[0][i] = c;
    }
    for (i = 0; i < 256; i++)
        for (j = 1; j < 8; j++)
            xos_crc32c_table[j][i] = (xos_crc32c_table[j - 1][i] >> 8)
                                     ^ xos_crc32c_table[0][xos_crc32c_table[j - 1][i] & 0xFF];
    xos_crc32c_table_ready = 1;
}

/* Software CRC32C: slicing-by-8 (little-endian hosts). */
static inline uint32_t xos_crc32c_sw(uint32_t crc, const void *data, size_t n) {
    const uint8_t *p = (const uint8_t *)data;
    uint32_t c = ~crc;
    uint64_t w;
    if (!xos_crc32c_table_ready) xos_crc32c_init_table();
    while (n && ((uintptr_t)p & 7)) {
        c = xos_crc32c_table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
        n--;
    }
    while (n >= 8) {
        memcpy(&w, p, 8);
        w ^= c;
        c = xos_crc32c_table[7][w & 0xFF] ^ xos_crc32c_table[6][(w >> 8) & 0xFF]
            ^ xos_crc32c_table[5][(w >> 16) & 0xFF] ^ xos_crc32c_table[4][(w >> 24) & 0xFF]
            ^ xos_crc32c_table[3][(w >> 32) & 0xFF] ^ xos_crc32c_table[2][(w >> 40) & 0xFF]
            ^ xos_crc32c_table[1][(w >> 48) & 0xFF] ^ xos_crc32c_table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) c = xos_crc32c_table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return ~c;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>

__attribute__((target("sse4.2")))
static uint32_t xos_crc32c_hw(uint32_t crc, const void *data, size_t n) {
    const uint8_t *p = (const uint8_t *)data;
    uint64_t c = (uint32_t)~crc, w;
    while (n && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        n--;
    }
    while (n >= 32) {  /* unrolled; one dependency chain, 8 bytes per ~3 cycles */
        memcpy(&w, p, 8);      c = _mm_crc32_u64(c, w);
        memcpy(&w, p + 8, 8);  c = _mm_crc32_u64(c, w);
        memcpy(&w, p + 16, 8); c = _mm_crc32_u64(c, w);
        memcpy(&w, p + 24, 8); c = _mm_crc32_u64(c, w);
        p += 32;
        n -= 32;
    }
    while (n >= 8) {
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        n -= 8;
    }
    while (n--) c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}

static inline int xos_crc32c_hw_available(void) {
    static volatile int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("sse4.2") ? 1 : 0;
    }
    return have;
}
#else
static inline uint32_t xos_crc32c_hw(uint32_t crc, const void *data, size_t n) {
    return xos_crc32c_sw(crc, data, n);
}
static inline int xos_crc32c_hw_available(void) { return 0; }
#endif

/* The CRC by the fastest available implementation. */
static inline uint32_t xos_crc32c(uint32_t crc, const void *data, size_t n) {
    return xos_crc32c_hw_available() ? xos_crc32c_hw(crc, data, n) : xos_crc32c_sw(crc, data, n);
}
#endif
