#!/usr/bin/env python3
"""Runs a command and writes one line to OUT_FILE: wall, user and system seconds (to the
microsecond, where GNU time reports hundredths) and peak RSS in KiB. Exit status: the command's.

Usage: time_command.py OUT_FILE COMMAND [ARGS...]
The quantizing-convert benchmark (bench/quantize_convert.sh) compares CPU times of ~0.2-0.5 s
whose difference is a few hundredths; GNU time's 10 ms steps were as large as the margin.
"""
import os
import sys
import time


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__.strip().splitlines()[-3], file=sys.stderr)
        return 2
    # posix_spawn (a vfork underneath) and the child's own rusage from wait4: a fork of this
    # interpreter would add its page-table copy to the child's system time and its size to the RSS.
    start = time.perf_counter()
    pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    with open(sys.argv[1], "w") as out:
        out.write(f"{wall:.6f} {usage.ru_utime:.6f} {usage.ru_stime:.6f} {usage.ru_maxrss}\n")
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
