/* The margin view's valuation (engine/workers/margin.py, revalue_cells in engine/workercore.pyx): per account,
   the exact sum over its cells of floor(amount * w / 2^s), each cell's amounts added first, all in 128 bits,
   and whether it fits in int64.  No float and no bound estimated: an account is refused only when its value
   does not fit. */
#ifndef XOS_VALUATION_H
#define XOS_VALUATION_H
#include <stdint.h>

/* A cell's summed amount (2^33 int64s stay below it) and a cell's value (2^26 cells of a row stay below 2^126)
   this large mark the row: |amount| < 2^96 and w < 2^31 keep amount * w inside 128 bits. */
#define XOS_AMOUNT_LIMIT ((__int128)1 << 96)
#define XOS_CELL_LIMIT ((__int128)1 << 100)

typedef struct {
    __int128 sum;
    int over;  /* a cell reached a limit above */
} xos_row_value;

/* floor(amount * w / 2^s) for 0 <= w < 2^31 and any shift s, added to row. */
static inline void xos_row_add(xos_row_value *row, __int128 amount, int64_t w, int64_t s) {
    __int128 v;
    int64_t k;
    if (amount >= XOS_AMOUNT_LIMIT || amount <= -XOS_AMOUNT_LIMIT) {
        row->over = 1;
        return;
    }
    v = amount * w;
    if (s >= 0) {
        v = s >= 127 ? (v < 0 ? -1 : 0) : v >> s;  /* an arithmetic shift floors (GCC, Clang) */
    } else {
        k = -s;
        if (v == 0)
            return;
        if (k >= 100 || v >= (XOS_CELL_LIMIT >> k) || v <= -(XOS_CELL_LIMIT >> k)) {
            row->over = 1;
            return;
        }
        v *= (__int128)1 << k;  /* a multiplication: a negative number is not shifted left */
    }
    if (v >= XOS_CELL_LIMIT || v <= -XOS_CELL_LIMIT) {
        row->over = 1;
        return;
    }
    row->sum += v;
}

/* Cells (flat row * width + column, non-decreasing, so a cell's amounts are adjacent) with their amounts: each
   cell's amounts added, then valued at its column's weight w[c] / 2^s[c] into rows[cell / width].  0, or -1 at a
   cell outside nrows x width, -2 at one below the cell before it. */
static inline int xos_revalue_cells(const int64_t *cells, const int64_t *amounts, int64_t m, const int64_t *w,
                                    const int64_t *s, int64_t width, int64_t nrows, xos_row_value *rows) {
    int64_t i = 0, j, cell, c;
    __int128 amount;
    while (i < m) {
        cell = cells[i];
        if (cell < 0 || cell / width >= nrows)
            return -1;
        amount = 0;
        for (j = i; j < m && cells[j] == cell; j++)
            amount += amounts[j];
        if (j < m && cells[j] < cell)
            return -2;
        c = cell % width;
        xos_row_add(&rows[cell / width], amount, w[c], s[c]);
        i = j;
    }
    return 0;
}

/* The row's sum as an int64 in *out and 1; or 0 where it does not fit (or a cell reached a limit). */
static inline int xos_row_fits(const xos_row_value *row, int64_t *out) {
    if (row->over || row->sum > INT64_MAX || row->sum < INT64_MIN)
        return 0;
    *out = (int64_t)row->sum;
    return 1;
}

#endif
