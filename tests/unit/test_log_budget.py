"""The log measurement counts what a rolled log wrote: its growth alone undercounts (a roll shrinks it)."""

import gzip
import os
import time

from benchmarks.door.log_budget import bytes_written, sizes


def test_bytes_written_counts_the_content_of_logs_rolled_meanwhile(tmp_path):
    log = tmp_path / "access_log.log"
    log.write_bytes(b"a" * 300)  # before the run
    (tmp_path / "access_log.1.log.gz").write_bytes(gzip.compress(b"old" * 10))
    os.utime(tmp_path / "access_log.1.log.gz", (0, 0))  # an archive from an earlier run
    before, since = sizes(tmp_path), time.time()
    # The run writes 1,000 bytes: at 1,100 the log rolls into a new archive, 200 are written after the roll.
    (tmp_path / "access_log.2.log.gz").write_bytes(gzip.compress(b"a" * 300 + b"b" * 800))
    log.write_bytes(b"c" * 200)
    written = bytes_written(before, sizes(tmp_path), since)
    assert written == {str(log): 1000}  # the log's growth alone says -100
