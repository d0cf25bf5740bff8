# The row formats of gateway.messages' OrderRows, AckRows and ReportRows, for the C paths that read and write them
# (gateway/intake.pyx, gateway/routing.pyx); tests/test_rowpack.py holds them equal to gateway.messages'.
cdef enum:
    FIXED_ROWS = 2
    PACKED_ROWS = 3
