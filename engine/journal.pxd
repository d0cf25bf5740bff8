cimport cython
from libc.stdint cimport int64_t, uint8_t

from records cimport xos_command


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
    cdef uint8_t *buf                    # framed batches appended since the last commit
    cdef size_t buf_len
    cdef size_t buf_cap
    cdef int64_t seg_first_seq
    cdef int64_t seg_size
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
    cdef int64_t _segments_created
    cdef int err_no                      # errno of the failed system call
    cdef const char *err_op              # which call failed
    cdef bint failed                     # an I/O error happened: the writer refuses everything
    cdef bint closed

    cdef int append(self, const xos_command *cmds, int64_t n, int64_t first_seq) noexcept nogil
    cdef int64_t group_commit(self) noexcept nogil
    cdef int new_segment(self, int64_t first_seq) noexcept nogil
    cdef int reserve(self, size_t extra) noexcept nogil
    cdef int fail(self, const char *op) noexcept nogil
