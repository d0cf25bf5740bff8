/* On-disk format of the command journal (engine/journal.pyx).
 *
 * A journal is a directory of append-only segment files named by the
 * sequence of their first command, "%020lld.journal".  Each segment is a file
 * header followed by frames; a frame is one appended batch, in one of two kinds:
 *
 *   "XOSP": frame header (24 bytes) | count packed commands (packedrows.h, the
 *           layout of engine.journal.COMMAND_PACKING; 2 to 63 bytes a command)
 *   "XOSF": frame header (24 bytes) | count x 64-byte xos_command (a batch
 *           that packs to 64 bytes a command or more)
 *
 * The frame CRC32C covers the header's first 20 bytes (magic .. payload_len)
 * and then the payload.  Frames carry the sequence of their first command;
 * sequences are dense across frames and segments.  All little-endian.
 *
 * A segment may end in zero bytes: with fsync="always" the writer writes
 * whole 4 KiB blocks (O_DIRECT) into segments zero-filled ahead of use, so
 * the data ends where a frame header would start and only zeros follow. */
#ifndef XOS_JOURNAL_FORMAT_H
#define XOS_JOURNAL_FORMAT_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "crc32c.h"

#define XOS_JOURNAL_FILE_MAGIC   0x4A534F58u   /* "XOSJ" */
#define XOS_JOURNAL_FRAME_MAGIC  0x46534F58u   /* "XOSF": fixed 64-byte commands */
#define XOS_JOURNAL_PACKED_MAGIC 0x50534F58u   /* "XOSP": packed commands */
#define XOS_JOURNAL_VERSION      2              /* 1 had fixed frames only */
#define XOS_JOURNAL_RECORD_SIZE  64
#define XOS_JOURNAL_MAX_FRAME_RECORDS (1 << 20)  /* longer appends are split */
#define XOS_JOURNAL_PACKED_MIN_RECORD 2            /* a packed command's presence map (14 fields) */

typedef struct xos_journal_file_header {
    uint32_t magic;            /* XOS_JOURNAL_FILE_MAGIC */
    uint16_t journal_version;  /* XOS_JOURNAL_VERSION */
    uint16_t layout_version;   /* XOS_LAYOUT_VERSION of the records */
    uint32_t record_size;      /* 64 */
    uint32_t crc;              /* CRC32C of this header with crc = 0 */
    int64_t  first_seq;        /* sequence of the segment's first command (= its name) */
    int64_t  created_ns;       /* wall clock at creation, informational */
} xos_journal_file_header;     /* 32 bytes */

typedef struct xos_journal_frame_header {
    uint32_t magic;            /* XOS_JOURNAL_FRAME_MAGIC */
    uint32_t count;            /* commands in the frame, 1..XOS_JOURNAL_MAX_FRAME_RECORDS */
    int64_t  first_seq;        /* sequence of the frame's first command */
    uint32_t payload_len;      /* XOSF: count * 64; XOSP: 2 * count .. count * 64 - 1 */
    uint32_t crc;              /* CRC32C of bytes 0..20 of this header, then the payload */
} xos_journal_frame_header;    /* 24 bytes */

#define XOS_JOURNAL_FILE_HEADER_SIZE  ((int64_t)sizeof(xos_journal_file_header))
#define XOS_JOURNAL_FRAME_HEADER_SIZE ((int64_t)sizeof(xos_journal_frame_header))
#define XOS_JOURNAL_FRAME_CRC_SPAN 20

/* writer result codes (negative; append returns 0 when it succeeds) */
enum {
    XOS_J_OK = 0,
    XOS_J_SEQUENCE = -1,       /* first_seq does not continue the journal */
    XOS_J_NOMEM = -2,
    XOS_J_IO = -3,             /* a system call failed; errno kept by the writer */
    XOS_J_CLOSED = -4,         /* the writer is closed or failed earlier */
    XOS_J_ARG = -5             /* negative count */
};

/* scan results: why a scan stopped */
enum {
    XOS_JSCAN_END = 0,          /* clean end of data */
    XOS_JSCAN_TORN_HEADER = 1,  /* fewer than 24 bytes left */
    XOS_JSCAN_BAD_MAGIC = 2,
    XOS_JSCAN_BAD_LENGTH = 3,   /* count 0, too large, or payload_len not its kind's */
    XOS_JSCAN_TORN_PAYLOAD = 4, /* the payload runs past the end of the data */
    XOS_JSCAN_BAD_CRC = 5,
    XOS_JSCAN_SEQUENCE = 6,     /* an intact frame whose first_seq breaks continuity */
    XOS_JSCAN_ZEROS = 7,        /* the end of data: only zero bytes follow (in this buffer) */
    XOS_JSCAN_AFTER_ZEROS = 8   /* zero bytes where a frame header would start, then data */
};

typedef struct xos_journal_scan {
    int64_t end;        /* offset just past the last valid frame */
    int64_t next_seq;   /* sequence the next frame must start with */
    int64_t frames;     /* valid frames seen */
    int64_t records;    /* commands in them */
    int status;         /* XOS_JSCAN_* */
} xos_journal_scan;

static inline uint32_t xos_journal_file_header_crc(const xos_journal_file_header *h) {
    xos_journal_file_header t = *h;
    t.crc = 0;
    return xos_crc32c(0, &t, sizeof t);
}

static inline uint32_t xos_journal_frame_crc(const xos_journal_frame_header *h, const void *payload) {
    uint32_t c = xos_crc32c(0, h, XOS_JOURNAL_FRAME_CRC_SPAN);
    return xos_crc32c(c, payload, h->payload_len);
}

static inline int xos_journal_all_zero(const uint8_t *p, int64_t n) {
    uint64_t w;
    for (; n >= 8; p += 8, n -= 8) {
        memcpy(&w, p, 8);
        if (w) return 0;
    }
    for (; n > 0; p++, n--)
        if (*p) return 0;
    return 1;
}

/* Walk the frames of buf[off:len] while they are valid and continue the
 * sequence from next_seq; r says where and why it stopped.  Zero bytes where
 * a frame header would start are the zero-filled end of the data (no header
 * begins with one): XOS_JSCAN_ZEROS if only zeros follow in buf. */
static inline void xos_journal_scan_frames(const uint8_t *buf, int64_t len, int64_t off,
                                           int64_t next_seq, xos_journal_scan *r) {
    xos_journal_frame_header h;
    int64_t head;
    r->frames = 0;
    r->records = 0;
    for (;;) {
        r->end = off;
        r->next_seq = next_seq;
        if (off == len) { r->status = XOS_JSCAN_END; return; }
        head = len - off < XOS_JOURNAL_FRAME_HEADER_SIZE ? len - off : XOS_JOURNAL_FRAME_HEADER_SIZE;
        if (xos_journal_all_zero(buf + off, head)) {
            r->status = xos_journal_all_zero(buf + off + head, len - off - head) ? XOS_JSCAN_ZEROS
                                                                                 : XOS_JSCAN_AFTER_ZEROS;
            return;
        }
        if (head < XOS_JOURNAL_FRAME_HEADER_SIZE) { r->status = XOS_JSCAN_TORN_HEADER; return; }
        memcpy(&h, buf + off, sizeof h);
        if (h.magic != XOS_JOURNAL_FRAME_MAGIC && h.magic != XOS_JOURNAL_PACKED_MAGIC) {
            r->status = XOS_JSCAN_BAD_MAGIC;
            return;
        }
        if (h.count == 0 || h.count > XOS_JOURNAL_MAX_FRAME_RECORDS
                || (h.magic == XOS_JOURNAL_FRAME_MAGIC
                    && (uint64_t)h.payload_len != (uint64_t)h.count * XOS_JOURNAL_RECORD_SIZE)
                || (h.magic == XOS_JOURNAL_PACKED_MAGIC
                    && ((uint64_t)h.payload_len < (uint64_t)h.count * XOS_JOURNAL_PACKED_MIN_RECORD
                        || (uint64_t)h.payload_len >= (uint64_t)h.count * XOS_JOURNAL_RECORD_SIZE))) {
            r->status = XOS_JSCAN_BAD_LENGTH;
            return;
        }
        if (len - off - XOS_JOURNAL_FRAME_HEADER_SIZE < (int64_t)h.payload_len) {
            r->status = XOS_JSCAN_TORN_PAYLOAD;
            return;
        }
        if (xos_journal_frame_crc(&h, buf + off + XOS_JOURNAL_FRAME_HEADER_SIZE) != h.crc) {
            r->status = XOS_JSCAN_BAD_CRC;
            return;
        }
        if (h.first_seq != next_seq) { r->status = XOS_JSCAN_SEQUENCE; return; }
        off += XOS_JOURNAL_FRAME_HEADER_SIZE + h.payload_len;
        next_seq += h.count;
        r->frames += 1;
        r->records += h.count;
    }
}
#endif
