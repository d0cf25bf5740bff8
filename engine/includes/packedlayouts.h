/* The packed rows' codec (packedrows.h) compiled for each layout the engine packs: the journal's commands and the
 * wire's command, ack and report rows.  With the layout a constant the compiler unrolls a row's fields and drops
 * every test of a field's size, sign and delta; 8,192 rows of the benchmark's flow packed 2 (acks) to 3.5
 * (commands) times as fast as through the generic code (session 39).  A RowPacking takes the kernels whose
 * layout equals its own, field for field, and the generic ones otherwise, so a layout changed in one place
 * only is slower, never wrong; tests/test_rowpack.py checks that each of the four finds its kernels.
 * engine/rowpack.pyx is the only caller. */
#ifndef XOS_PACKEDLAYOUTS_H
#define XOS_PACKEDLAYOUTS_H
#include <stddef.h>
#include "packedrows.h"
#include "records.h"

/* The wire's rows as gateway.messages' COMMAND_ROW_DTYPE, ACK_ROW_DTYPE and REPORT_ROW_DTYPE lay them out. */
#pragma pack(push, 1)
typedef struct {
    uint8_t kind, side, tif, ord_type, stp, flags;
    uint32_t market, venue;
    int64_t rid, price, qty, id, expire_at;
} xos_wire_command_row;

typedef struct {
    int64_t rid, order_id, client_id, cmd_seq, durable_seq, count, ts;
} xos_wire_ack_row;

typedef struct {
    uint8_t kind, side, liquidity, reason;
    uint16_t code;
    uint32_t market, venue;
    int64_t order_id, client_id, price, qty, remaining, fee, seq, cmd_seq, ts;
} xos_wire_report_row;
#pragma pack(pop)

#define XOS_PF(type, field, is_signed, delta) {offsetof(type, field), sizeof(((type *)0)->field), is_signed, delta}
#define XOS_PACK_HEAD(type, n) n, sizeof(type), (n + 7) / 8, NULL, NULL

/* engine.journal.COMMAND_PACKING: deltas ts, account, price, id */
static const xos_pack_layout XOS_JOURNAL_COMMAND_LAYOUT = {
    {XOS_PF(xos_command, kind, 0, 0), XOS_PF(xos_command, side, 0, 0), XOS_PF(xos_command, tif, 0, 0),
     XOS_PF(xos_command, ord_type, 0, 0), XOS_PF(xos_command, stp, 0, 0), XOS_PF(xos_command, flags, 0, 0),
     XOS_PF(xos_command, venue, 0, 0), XOS_PF(xos_command, market, 0, 0), XOS_PF(xos_command, ts, 1, 1),
     XOS_PF(xos_command, account, 1, 1), XOS_PF(xos_command, price, 1, 1), XOS_PF(xos_command, qty, 1, 0),
     XOS_PF(xos_command, id, 1, 1), XOS_PF(xos_command, aux, 1, 0)},
    XOS_PACK_HEAD(xos_command, 14)};

/* gateway.messages.COMMAND_PACKING: deltas rid, price, id, expire_at */
static const xos_pack_layout XOS_WIRE_COMMAND_LAYOUT = {
    {XOS_PF(xos_wire_command_row, kind, 0, 0), XOS_PF(xos_wire_command_row, side, 0, 0),
     XOS_PF(xos_wire_command_row, tif, 0, 0), XOS_PF(xos_wire_command_row, ord_type, 0, 0),
     XOS_PF(xos_wire_command_row, stp, 0, 0), XOS_PF(xos_wire_command_row, flags, 0, 0),
     XOS_PF(xos_wire_command_row, market, 0, 0), XOS_PF(xos_wire_command_row, venue, 0, 0),
     XOS_PF(xos_wire_command_row, rid, 1, 1), XOS_PF(xos_wire_command_row, price, 1, 1),
     XOS_PF(xos_wire_command_row, qty, 1, 0), XOS_PF(xos_wire_command_row, id, 1, 1),
     XOS_PF(xos_wire_command_row, expire_at, 1, 1)},
    XOS_PACK_HEAD(xos_wire_command_row, 13)};

/* gateway.messages.ACK_PACKING: deltas every field but count */
static const xos_pack_layout XOS_WIRE_ACK_LAYOUT = {
    {XOS_PF(xos_wire_ack_row, rid, 1, 1), XOS_PF(xos_wire_ack_row, order_id, 1, 1),
     XOS_PF(xos_wire_ack_row, client_id, 1, 1), XOS_PF(xos_wire_ack_row, cmd_seq, 1, 1),
     XOS_PF(xos_wire_ack_row, durable_seq, 1, 1), XOS_PF(xos_wire_ack_row, count, 1, 0),
     XOS_PF(xos_wire_ack_row, ts, 1, 1)},
    XOS_PACK_HEAD(xos_wire_ack_row, 7)};

/* gateway.messages.REPORT_PACKING: deltas order_id, client_id, price, seq, cmd_seq, ts */
static const xos_pack_layout XOS_WIRE_REPORT_LAYOUT = {
    {XOS_PF(xos_wire_report_row, kind, 0, 0), XOS_PF(xos_wire_report_row, side, 0, 0),
     XOS_PF(xos_wire_report_row, liquidity, 0, 0), XOS_PF(xos_wire_report_row, reason, 0, 0),
     XOS_PF(xos_wire_report_row, code, 0, 0), XOS_PF(xos_wire_report_row, market, 0, 0),
     XOS_PF(xos_wire_report_row, venue, 0, 0), XOS_PF(xos_wire_report_row, order_id, 1, 1),
     XOS_PF(xos_wire_report_row, client_id, 1, 1), XOS_PF(xos_wire_report_row, price, 1, 1),
     XOS_PF(xos_wire_report_row, qty, 1, 0), XOS_PF(xos_wire_report_row, remaining, 1, 0),
     XOS_PF(xos_wire_report_row, fee, 1, 0), XOS_PF(xos_wire_report_row, seq, 1, 1),
     XOS_PF(xos_wire_report_row, cmd_seq, 1, 1), XOS_PF(xos_wire_report_row, ts, 1, 1)},
    XOS_PACK_HEAD(xos_wire_report_row, 16)};

#undef XOS_PF
#undef XOS_PACK_HEAD

#define XOS_PACK_KERNELS(name, LAYOUT)                                                                          \
    static size_t name##_pack(const xos_pack_layout *L, const unsigned char *rows, size_t n, unsigned char *out, \
                              uint64_t *last) {                                                                 \
        (void)L;                                                                                                \
        return xos_pack_rows_in(&LAYOUT, rows, n, out, last);                                                   \
    }                                                                                                           \
    static int64_t name##_unpack(const xos_pack_layout *L, const unsigned char *in, size_t size,                \
                                 unsigned char *out, int64_t max_rows, int64_t *bad_row, int *bad_field) {      \
        (void)L;                                                                                                \
        return xos_unpack_rows_in(&LAYOUT, in, size, out, max_rows, bad_row, bad_field);                        \
    }
XOS_PACK_KERNELS(xos_journal_command, XOS_JOURNAL_COMMAND_LAYOUT)
XOS_PACK_KERNELS(xos_wire_command, XOS_WIRE_COMMAND_LAYOUT)
XOS_PACK_KERNELS(xos_wire_ack, XOS_WIRE_ACK_LAYOUT)
XOS_PACK_KERNELS(xos_wire_report, XOS_WIRE_REPORT_LAYOUT)
#undef XOS_PACK_KERNELS

typedef struct {
    const char *name;
    const xos_pack_layout *layout;
    xos_pack_rows_f pack;
    xos_unpack_rows_f unpack;
} xos_pack_kernels;

static const xos_pack_kernels XOS_PACK_KERNELS_KNOWN[] = {
    {"journal command", &XOS_JOURNAL_COMMAND_LAYOUT, xos_journal_command_pack, xos_journal_command_unpack},
    {"wire command", &XOS_WIRE_COMMAND_LAYOUT, xos_wire_command_pack, xos_wire_command_unpack},
    {"wire ack", &XOS_WIRE_ACK_LAYOUT, xos_wire_ack_pack, xos_wire_ack_unpack},
    {"wire report", &XOS_WIRE_REPORT_LAYOUT, xos_wire_report_pack, xos_wire_report_unpack},
};

/* Whether two layouts pack alike: the same fields in the same order, the same row size. */
static inline int xos_pack_same_layout(const xos_pack_layout *a, const xos_pack_layout *b) {
    uint32_t k;
    if (a->n_fields != b->n_fields || a->row_size != b->row_size || a->map_bytes != b->map_bytes)
        return 0;
    for (k = 0; k < a->n_fields; k++)
        if (a->fields[k].offset != b->fields[k].offset || a->fields[k].size != b->fields[k].size ||
            a->fields[k].is_signed != b->fields[k].is_signed || a->fields[k].delta != b->fields[k].delta)
            return 0;
    return 1;
}

/* Sets L's codec: the kernels compiled for its layout when ``specialize`` and there are some, else the generic
 * ones.  Returns the kernels' name ("generic" for the generic ones). */
static inline const char *xos_pack_choose(xos_pack_layout *L, int specialize) {
    size_t i;
    for (i = 0; specialize && i < sizeof(XOS_PACK_KERNELS_KNOWN) / sizeof(XOS_PACK_KERNELS_KNOWN[0]); i++) {
        if (xos_pack_same_layout(L, XOS_PACK_KERNELS_KNOWN[i].layout)) {
            L->pack = XOS_PACK_KERNELS_KNOWN[i].pack;
            L->unpack = XOS_PACK_KERNELS_KNOWN[i].unpack;
            return XOS_PACK_KERNELS_KNOWN[i].name;
        }
    }
    L->pack = xos_pack_rows_generic;
    L->unpack = xos_unpack_rows_generic;
    return "generic";
}

#endif
