/* Packed rows: the compact form of fixed-size little-endian records of integers (the gateway's command, ack
 * and report rows; the journal's commands).  Each row is a presence map, one bit a field (bit k of byte k / 8),
 * set when the field is not 0, then each present field as a LEB128 varint: a signed field zigzagged, a
 * "delta" field (int64 only) as the zigzagged difference from the last non-zero value of that field in
 * the same message (0 before the first), wrapping as uint64 so every value has one.  Encoding is
 * canonical and decoding is strict (no varint longer than it needs, no present field of value 0, no map
 * bit past the layout's fields, every value within its field), so a message has one reading or none.
 * Why: CurveZMQ's boxing and the kernel's copies cost by the byte, and a market maker's rows are mostly
 * zeros, small numbers and ids one apart (session 37: 54-byte rows in, 56 and 86 out, ~160 bytes an order).
 * engine/rowpack.pyx is the Python edge; tests/rowpack_reference.py the same rules in Python. */
#ifndef XOS_PACKEDROWS_H
#define XOS_PACKEDROWS_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define XOS_PACK_MAX_FIELDS 16

/* What a decode found wrong (negated as its return value). */
enum {
    XOS_PACK_TRUNCATED = 1,      /* the bytes end inside a row's map or a varint */
    XOS_PACK_LONG_VARINT = 2,    /* a varint past 64 bits, or longer than its value needs */
    XOS_PACK_UNKNOWN_FIELD = 3,  /* a map bit past the layout's fields */
    XOS_PACK_OUT_OF_RANGE = 4,   /* a value its field cannot hold */
    XOS_PACK_ZERO_PRESENT = 5,   /* a field marked present whose value is 0 */
    XOS_PACK_TOO_MANY_ROWS = 6   /* more rows than the caller takes */
};

typedef struct {
    uint32_t offset;    /* in the row */
    uint8_t size;       /* 1, 2, 4 or 8 bytes */
    uint8_t is_signed;
    uint8_t delta;      /* against the last non-zero value of the field (int64 fields only) */
} xos_pack_field;

typedef struct xos_pack_layout xos_pack_layout;
typedef size_t (*xos_pack_rows_f)(const xos_pack_layout *L, const unsigned char *rows, size_t n, unsigned char *out,
                                  uint64_t *last);
typedef int64_t (*xos_unpack_rows_f)(const xos_pack_layout *L, const unsigned char *in, size_t size,
                                     unsigned char *out, int64_t max_rows, int64_t *bad_row, int *bad_field);

struct xos_pack_layout {
    xos_pack_field fields[XOS_PACK_MAX_FIELDS];
    uint32_t n_fields;
    uint32_t row_size;
    uint32_t map_bytes;  /* (n_fields + 7) / 8 */
    /* The codec for this layout: xos_pack_rows_generic / xos_unpack_rows_generic, or the same code compiled for
     * one constant layout (packedlayouts.h), which packs 2-3.5 times as fast. */
    xos_pack_rows_f pack;
    xos_unpack_rows_f unpack;
};

/* The most bytes one packed row takes. */
static inline size_t xos_pack_row_max(const xos_pack_layout *L) { return L->map_bytes + 10 * (size_t)L->n_fields; }

static inline uint64_t xos_pack_zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }
static inline int64_t xos_pack_unzigzag(uint64_t u) { return (int64_t)((u >> 1) ^ (0 - (u & 1))); }

/* A field's value, sign-extended when it is signed (x86: little-endian loads). */
static inline uint64_t xos_pack_load(const unsigned char *at, const xos_pack_field *f) {
    uint8_t u8; uint16_t u16; uint32_t u32; uint64_t u64;
    switch (f->size) {
    case 1: memcpy(&u8, at, 1); return f->is_signed ? (uint64_t)(int64_t)(int8_t)u8 : u8;
    case 2: memcpy(&u16, at, 2); return f->is_signed ? (uint64_t)(int64_t)(int16_t)u16 : u16;
    case 4: memcpy(&u32, at, 4); return f->is_signed ? (uint64_t)(int64_t)(int32_t)u32 : u32;
    default: memcpy(&u64, at, 8); return u64;
    }
}

/* Whether ``v`` (as loaded) fits the field. */
static inline int xos_pack_fits(uint64_t v, const xos_pack_field *f) {
    if (f->size == 8)
        return 1;
    if (f->is_signed) {
        int64_t half = (int64_t)1 << (8 * f->size - 1);
        return (int64_t)v >= -half && (int64_t)v < half;
    }
    return v >> (8 * f->size) == 0;
}

static inline void xos_pack_store(unsigned char *at, const xos_pack_field *f, uint64_t v) {
    uint8_t u8 = (uint8_t)v; uint16_t u16 = (uint16_t)v; uint32_t u32 = (uint32_t)v;
    switch (f->size) {
    case 1: memcpy(at, &u8, 1); break;
    case 2: memcpy(at, &u16, 2); break;
    case 4: memcpy(at, &u32, 4); break;
    default: memcpy(at, &v, 8);
    }
}

/* Rows rows[0..n) packed into out (room for n * xos_pack_row_max); returns the bytes written.  ``last``:
 * each field's last non-zero value, all 0 at a message's start, kept so that a message's rows can be
 * packed in parts.  Always inlined: given a constant layout the compiler unrolls the fields and drops every
 * test of a field's size, sign and delta (packedlayouts.h). */
static inline __attribute__((always_inline)) size_t xos_pack_rows_in(const xos_pack_layout *L,
                                                                     const unsigned char *rows, size_t n,
                                                                     unsigned char *out, uint64_t *last) {
    unsigned char *at = out, *map;
    const unsigned char *row;
    const xos_pack_field *f;
    uint64_t v, u;
    uint32_t k;
    size_t i;
    for (i = 0; i < n; i++) {
        row = rows + i * L->row_size;
        map = at;
        memset(map, 0, L->map_bytes);
        at += L->map_bytes;
#pragma GCC unroll 16
        for (k = 0; k < L->n_fields; k++) {
            f = &L->fields[k];
            v = xos_pack_load(row + f->offset, f);
            if (v == 0)
                continue;
            map[k >> 3] |= (unsigned char)(1u << (k & 7));
            if (f->delta) {
                u = xos_pack_zigzag((int64_t)(v - last[k]));
                last[k] = v;
            } else {
                u = f->is_signed ? xos_pack_zigzag((int64_t)v) : v;
            }
            while (u >= 0x80) {
                *at++ = (unsigned char)(u | 0x80);
                u >>= 7;
            }
            *at++ = (unsigned char)u;
        }
    }
    return (size_t)(at - out);
}

/* How many rows begin in in[0..size), found by their maps and the varints' last bytes alone: exact for packed
 * rows, and never fewer than xos_unpack_rows reads of any bytes (it reads rows the same way), so the room for
 * a message's rows can be made to its size. */
static inline int64_t xos_count_rows(const xos_pack_layout *L, const unsigned char *in, size_t size) {
    const unsigned char *at = in, *end = in + size;
    int64_t n = 0;
    int present;
    uint32_t b, v;
    while (at < end) {
        n++;
        if ((size_t)(end - at) < L->map_bytes)
            break;
        present = 0;
        for (b = 0; b < L->map_bytes; b++) {  /* a byte's bits counted in registers (no popcnt without -mpopcnt) */
            v = at[b] - ((at[b] >> 1) & 0x55);
            v = (v & 0x33) + ((v >> 2) & 0x33);
            present += (int)((v + (v >> 4)) & 0x0f);
        }
        at += L->map_bytes;
        for (; present > 0 && at < end; present--) {
            while (at < end && *at & 0x80)
                at++;
            at++;
        }
    }
    return n;
}

/* in[0..size) read as packed rows into out (room for max_rows rows, each written whole: a field
 * not present is 0).  Returns the rows read, or minus an XOS_PACK_* code with *bad_row and *bad_field
 * (-1 for the row's map) saying where.  Always inlined, as xos_pack_rows_in. */
static inline __attribute__((always_inline)) int64_t xos_unpack_rows_in(const xos_pack_layout *L,
                                                                        const unsigned char *in, size_t size,
                                                                        unsigned char *out, int64_t max_rows,
                                                                        int64_t *bad_row, int *bad_field) {
    uint64_t last[XOS_PACK_MAX_FIELDS] = {0};
    const unsigned char *at = in, *end = in + size, *map;
    unsigned char *row;
    const xos_pack_field *f;
    uint64_t u, v;
    unsigned char byte;
    int shift, code, field = -1;  /* where a refusal is told only when there is one: no store a field */
    uint32_t k;
    int64_t n = 0;
    while (at < end) {
        field = -1;
        if ((size_t)(end - at) < L->map_bytes) {
            code = XOS_PACK_TRUNCATED;
            goto refused;
        }
        if (n == max_rows) {
            code = XOS_PACK_TOO_MANY_ROWS;
            goto refused;
        }
        map = at;
        at += L->map_bytes;
        if (L->n_fields & 7 && map[L->map_bytes - 1] >> (L->n_fields & 7)) {
            code = XOS_PACK_UNKNOWN_FIELD;
            goto refused;
        }
        row = out + n * L->row_size;
        memset(row, 0, L->row_size);
#pragma GCC unroll 16
        for (k = 0; k < L->n_fields; k++) {
            if (!(map[k >> 3] >> (k & 7) & 1))
                continue;
            field = (int)k;
            f = &L->fields[k];
            if (at < end && *at < 0x80) {  /* most values take one byte */
                u = *at++;
            } else {
                u = 0;
                shift = 0;
                do {
                    if (at == end) {
                        code = XOS_PACK_TRUNCATED;
                        goto refused;
                    }
                    byte = *at++;
                    if (shift == 63 && byte > 1) {
                        code = XOS_PACK_LONG_VARINT;  /* past 64 bits */
                        goto refused;
                    }
                    u |= (uint64_t)(byte & 0x7f) << shift;
                    shift += 7;
                } while (byte & 0x80 && shift < 70);
                if (byte & 0x80 || (byte == 0 && shift > 7)) {
                    code = XOS_PACK_LONG_VARINT;  /* an 11th byte, or a trailing zero byte */
                    goto refused;
                }
            }
            if (f->delta)
                v = last[k] + (uint64_t)xos_pack_unzigzag(u);
            else
                v = f->is_signed ? (uint64_t)xos_pack_unzigzag(u) : u;
            if (v == 0) {
                code = XOS_PACK_ZERO_PRESENT;
                goto refused;
            }
            if (!xos_pack_fits(v, f)) {
                code = XOS_PACK_OUT_OF_RANGE;
                goto refused;
            }
            if (f->delta)
                last[k] = v;
            xos_pack_store(row + f->offset, f, v);
        }
        n++;
    }
    return n;
refused:
    *bad_row = n;
    *bad_field = field;
    return -code;
}

/* The codec for any layout. */
static __attribute__((noinline, unused)) size_t xos_pack_rows_generic(const xos_pack_layout *L,
                                                                      const unsigned char *rows, size_t n,
                                                                      unsigned char *out, uint64_t *last) {
    return xos_pack_rows_in(L, rows, n, out, last);
}

static __attribute__((noinline, unused)) int64_t xos_unpack_rows_generic(const xos_pack_layout *L,
                                                                         const unsigned char *in, size_t size,
                                                                         unsigned char *out, int64_t max_rows,
                                                                         int64_t *bad_row, int *bad_field) {
    return xos_unpack_rows_in(L, in, size, out, max_rows, bad_row, bad_field);
}

/* What callers use: the layout's own codec. */
static inline size_t xos_pack_rows(const xos_pack_layout *L, const unsigned char *rows, size_t n, unsigned char *out,
                                   uint64_t *last) {
    return L->pack(L, rows, n, out, last);
}

static inline int64_t xos_unpack_rows(const xos_pack_layout *L, const unsigned char *in, size_t size,
                                      unsigned char *out, int64_t max_rows, int64_t *bad_row, int *bad_field) {
    return L->unpack(L, in, size, out, max_rows, bad_row, bad_field);
}

#endif
