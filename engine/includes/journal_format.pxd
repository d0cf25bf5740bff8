from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t

cdef extern from "journal_format.h" nogil:
    uint32_t XOS_JOURNAL_FILE_MAGIC
    uint32_t XOS_JOURNAL_FRAME_MAGIC
    uint32_t XOS_JOURNAL_PACKED_MAGIC
    int XOS_JOURNAL_VERSION
    int XOS_JOURNAL_RECORD_SIZE
    int XOS_JOURNAL_MAX_FRAME_RECORDS
    int XOS_JOURNAL_PACKED_MIN_RECORD
    int64_t XOS_JOURNAL_FILE_HEADER_SIZE
    int64_t XOS_JOURNAL_FRAME_HEADER_SIZE
    int XOS_JOURNAL_FRAME_CRC_SPAN

    ctypedef struct xos_journal_file_header:
        uint32_t magic
        uint16_t journal_version
        uint16_t layout_version
        uint32_t record_size
        uint32_t crc
        int64_t first_seq
        int64_t created_ns

    ctypedef struct xos_journal_frame_header:
        uint32_t magic
        uint32_t count
        int64_t first_seq
        uint32_t payload_len
        uint32_t crc

    enum:
        XOS_J_OK
        XOS_J_SEQUENCE
        XOS_J_NOMEM
        XOS_J_IO
        XOS_J_CLOSED
        XOS_J_ARG

    enum:
        XOS_JSCAN_END
        XOS_JSCAN_TORN_HEADER
        XOS_JSCAN_BAD_MAGIC
        XOS_JSCAN_BAD_LENGTH
        XOS_JSCAN_TORN_PAYLOAD
        XOS_JSCAN_BAD_CRC
        XOS_JSCAN_SEQUENCE
        XOS_JSCAN_ZEROS
        XOS_JSCAN_AFTER_ZEROS

    ctypedef struct xos_journal_scan:
        int64_t end
        int64_t next_seq
        int64_t frames
        int64_t records
        int status

    uint32_t xos_journal_file_header_crc(const xos_journal_file_header *h)
    uint32_t xos_journal_frame_crc(const xos_journal_frame_header *h, const void *payload)
    int xos_journal_all_zero(const uint8_t *p, int64_t n)
    void xos_journal_scan_frames(const uint8_t *buf, int64_t len, int64_t off,
                                 int64_t next_seq, xos_journal_scan *r)
