cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t

from records cimport xos_command


@cython.final
cdef class SpareSegments:
    """A thread that keeps one zero-filled segment file ready for the writer (``fill``).  It holds this
    object, not the writer, so a writer that is never closed is still freed (and stops it)."""
    cdef char *path
    cdef bint direct
    cdef int64_t limit                   # a whole segment, in blocks
    cdef int32_t state                   # SPARE_WANTED / READY / FAILED / STOPPED (atomics: two threads)
    cdef int32_t stop_asked
    cdef int64_t ready_bytes             # the ready spare's size (published by the state's store)
    cdef int64_t next_bytes              # the next one's (doubling up to a whole segment)
    cdef int err_no
    cdef uint8_t *zeros                  # aligned zeros to fill from
    cdef object thread

    cdef int fill(self) noexcept nogil
    cdef int64_t ready(self) noexcept nogil
    cdef void taken(self) noexcept nogil


@cython.final
cdef class JournalWriter:
    cdef readonly object directory       # absolute path (str)
    cdef readonly int64_t segment_bytes
    cdef readonly bint fsync_always
    cdef readonly list recovery          # Damage entries found (and truncated away) on open
    cdef char *c_dir
    cdef char *path_buf
    cdef size_t path_cap
    cdef int fd                          # current segment, -1 = none
    cdef int dir_fd                      # the directory: fsync on create, flock against a second writer
    cdef readonly bint direct            # segments written with O_DIRECT, in whole blocks
    cdef int64_t block                   # write granularity: 4096 with O_DIRECT, else 1
    cdef int seg_flags                   # open flags of a segment: O_DIRECT, O_DSYNC with fsync="always"
    # buf[0:buf_len] are the segment's bytes from file offset blk_off (a multiple of ``block``):
    # buf[0:committed] the written part of the last block (rewritten with the next commit), then the
    # frames appended since the last commit
    cdef uint8_t *buf
    cdef size_t buf_len
    cdef size_t buf_cap
    cdef size_t committed
    cdef int64_t blk_off
    cdef int64_t seg_first_seq
    cdef int64_t seg_size                # bytes of the segment holding data (header and frames)
    cdef int64_t seg_room                # bytes the segment file has (zero-filled ahead of seg_size)
    cdef SpareSegments spares            # None with fsync="off"
    cdef int64_t _preallocated           # segments begun in a spare
    cdef int64_t _last_seq
    cdef int64_t _durable_seq
    cdef int64_t _bytes_written
    cdef int64_t _fsyncs
    cdef int64_t _fsync_ns
    cdef int64_t _last_fsync_ns
    cdef int64_t _max_fsync_ns
    cdef int64_t _dir_fsyncs
    cdef int64_t _commits
    cdef int64_t _frames
    cdef int64_t _packed_frames
    cdef uint8_t *pack_scratch           # a chunk of packed commands that may not fit the frame's room
    cdef int64_t _segments_created
    cdef int err_no                      # errno of the failed system call
    cdef const char *err_op              # which call failed
    cdef bint failed                     # an I/O error happened: the writer refuses everything
    cdef bint closed

    cdef int append(self, const xos_command *cmds, int64_t n, int64_t first_seq) noexcept nogil
    cdef int64_t pack_frame(self, const xos_command *cmds, int64_t k, uint8_t *out, int64_t room) noexcept nogil
    cdef int64_t group_commit(self) noexcept nogil
    cdef int new_segment(self, int64_t first_seq, int64_t spare_bytes) noexcept nogil
    cdef int begin_segment(self, bint from_spare) noexcept nogil
    cdef int write_buffer(self) noexcept nogil
    cdef int reserve(self, size_t extra) noexcept nogil
    cdef int fail(self, const char *op) noexcept nogil
