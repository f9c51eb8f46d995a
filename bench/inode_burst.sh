#!/usr/bin/env bash
# bench/inode_burst.sh DIR -- creates 20,000 one-byte files in 100 directories under DIR/burst
# and deletes them: the state a CI run or an `rm -rf` leaves on a file system. On ext4 without
# a journal, every file created for the next 5-305 s skips those inodes one by one
# (`recently_deleted()` in fs/ext4/ialloc.c), which makes rotations slow (BENCHMARKS.md, tenth
# session). Run it, then a tracerd_bench.py run with --work on the same file system.
set -euo pipefail
d=${1:?usage: inode_burst.sh DIR}/burst
mkdir -p "$d"
python3 - "$d" <<'PY'
import os, sys
d = sys.argv[1]
for i in range(100):
    p = os.path.join(d, f"n{i}")
    os.makedirs(p, exist_ok=True)
    for j in range(200):
        with open(os.path.join(p, f"f{j}"), "w") as f:
            f.write("x")
PY
rm -rf "$d"
