#!/usr/bin/env bash
# bench/run.sh -- the tracerd benchmark: tracerd under tracerd-load on loopback, next to
# rsyslog, syslog-ng and the raw socket->file ceiling measured by shared/bench/peer-bench.sh
# in the same run. Prints (and writes to $WORK/table.md) the table recorded in BENCHMARKS.md.
#
# Steps:
#   1. cargo build --release --bins (tracerd, tracerd-load)
#   2. throughput at max load: for each run, for each node count in $NODES: a fresh tracerd
#      (rotation on, 10 MB files, ForMachine, TCP 127.0.0.1) and tracerd-load --rate max for
#      $DURATION s with $SIZE-byte machine JSON (160 B gives ~300-byte log lines, the peers'
#      line size); every object must be acknowledged and found on disk
#   3. ack latency at half of the measured max load, at each node count in $LAT_NODES:
#      $LAT_RUNS runs each, alternating the counts, each with bench/stall_probe.py's probes;
#      with LAT_JOURNAL=1 (root, losetup and mkfs.ext4), each run is paired with one whose log
#      root is a journaled ext4 image mounted on $WORK/journaled: this VM's disk has no journal,
#      so file creation slows after mass deletions (BENCHMARKS.md, tenth session); the image's
#      loop device costs CPU of its own, so those rows diagnose, they do not replace the VM's
#   4. RSS of tracerd with $IDLE_NODES idle connected nodes
#   5. peers: peer-bench.sh setup (only if rsyslog is missing), limits, bench with reduced knobs
#   6. paired rows (issue 21, bench/paired.py): $PAIRS pairs A B A B of tracerd (native,
#      $PAIR_SENDERS senders) and rsyslog imptcp, then $PAIRS pairs of tracerd and hermod-tracer
#      1.0.1 on the same cardano-tracer config under tracerd-load --protocol cardano
#      ($CARDANO_NODES nodes); hermod-tracer is installed into $WORK/hermod by
#      `cargo install hermod-tracer --version 1.0.1` when $HERMOD_TRACER is not set (minutes)
#   7. the report: median (min-max, coefficient of variation) of every figure, and the paired
#      ratios as median with a 95 % bootstrap interval ("met" only if the interval clears)
#
# Knobs (defaults): RUNS (3), NODES ("1 8 10 100 1000"), DURATION (5), SIZE (160),
# LAT_NODES ("10 100"), LAT_RUNS (8), LAT_JOURNAL (0; 1 adds the journaled-ext4 runs), IDLE_NODES (10000, capped by the open-file limit), IDLE_RUNS (3),
# PEERS (1: run peer-bench.sh), PEER_N (500000), PEER_KS ("1 8 100"),
# PEER_RECEIVERS ("rsyslog-imptcp syslog-ng socat"), WORK (/tmp/tracerd-bench), PAIRS (5; 0 skips
# the paired rows), PAIR_SENDERS (8), PAIR_N (2000000 lines per rsyslog run), CARDANO_NODES (10),
# HERMOD (1; 0 skips hermod-tracer), HERMOD_TRACER (a hermod-tracer binary to use),
# PAIRED_ONLY (1: only the paired rows).
# Bounded: every tracerd-load run is bounded by its duration, a 30 s drain and a 60 s
# connect timeout; peer-bench.sh bounds its own runs (RUN_TIMEOUT).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
NODES=${NODES:-"1 8 10 100 1000"}
DURATION=${DURATION:-5}
SIZE=${SIZE:-160}
LAT_NODES=${LAT_NODES:-"10 100"}
LAT_RUNS=${LAT_RUNS:-8}
LAT_JOURNAL=${LAT_JOURNAL:-0}
IDLE_NODES=${IDLE_NODES:-10000}
IDLE_RUNS=${IDLE_RUNS:-3}
PEERS=${PEERS:-1}
PEER_N=${PEER_N:-500000}
PEER_KS=${PEER_KS:-"1 8 100"}
PEER_RECEIVERS=${PEER_RECEIVERS:-"rsyslog-imptcp syslog-ng socat"}
PEER_BENCH=${PEER_BENCH:-$ROOT/../shared/bench/peer-bench.sh}
WORK=${WORK:-/tmp/tracerd-bench}
PAIRS=${PAIRS:-5}
PAIR_SENDERS=${PAIR_SENDERS:-8}
PAIR_N=${PAIR_N:-2000000}
CARDANO_NODES=${CARDANO_NODES:-10}
HERMOD=${HERMOD:-1}
if [ "${PAIRED_ONLY:-0}" = 1 ]; then  # only the paired rows (step 6)
  NODES="" LAT_NODES="" IDLE_RUNS=0 PEERS=0
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PY=${PY:-python3}
HELPER="$ROOT/bench/tracerd_bench.py"

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
started=$(date +%s)

mkdir -p "$WORK"
RESULTS="$WORK/tracerd.jsonl"
: > "$RESULTS"

log "building release binaries"
(cd "$ROOT" && cargo build --release --bins --quiet)
BIN="$CARGO_TARGET_DIR/release"

# Every idle node costs tracerd one descriptor, its socket (its log file is closed while it
# sends nothing), and tracerd-load (its own process) a socket.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_LIMIT=$(ulimit -n)
if [ "$FD_LIMIT" != unlimited ] && [ $((IDLE_NODES + 64)) -gt "$FD_LIMIT" ]; then
  capped=$((FD_LIMIT - 64))
  log "open-file limit $FD_LIMIT (hard) allows $capped idle nodes, not $IDLE_NODES: measuring $capped"
  IDLE_NODES=$capped
fi

machine() {
  echo "Host: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/{print $2}') GiB RAM, kernel $(uname -r), open-file limit $FD_LIMIT."
  echo "Load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared with other builds)."
  echo "tracerd $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet || echo '+dirty'), rustc $(rustc --version | cut -d' ' -f2)."
  # A VM's free page reporting (virtio-balloon) hands freed memory back to the host, so the
  # page cache's next pages fault on the host inside write(2): a per-byte cost every writer
  # pays, tracerd and the peers alike, that moves with the host (BENCHMARKS.md, sixth session).
  local pr=/sys/module/page_reporting/parameters
  if [ -r "$pr/page_reporting_order" ]; then
    echo "Free page reporting: on (order $(cat "$pr/page_reporting_order")$( [ -r "$pr/min_free_ms" ] && echo ", min_free_ms $(cat "$pr/min_free_ms")"))."
  else
    echo "Free page reporting: not in this kernel."
  fi
}
machine > "$WORK/machine.txt"

# What file system holds $1, and whether it has a journal: ext4 without one makes every file
# creation skip, one by one, the inodes freed in the last 5 s (305 s while their inode table
# block is unwritten): `find_inode_bit` checks `recently_deleted()` only when `s_journal` is
# NULL (fs/ext4/ialloc.c). A rotation then costs ms instead of µs after a mass deletion.
fs_of() {
  local src fstype dev
  src=$(findmnt -n -o SOURCE --target "$1" 2>/dev/null || true)
  fstype=$(findmnt -n -o FSTYPE --target "$1" 2>/dev/null || true)
  dev=${src##*/}
  if [ "$fstype" = ext4 ]; then
    if compgen -G "/proc/fs/jbd2/$dev-*" > /dev/null; then
      echo "ext4 with a journal ($src)"
    else
      echo "ext4 without a journal ($src: no /proc/fs/jbd2 entry)"
    fi
  else
    echo "${fstype:-unknown} (${src:-?})"
  fi
}

echo "Log root: $(fs_of "$WORK")." >> "$WORK/machine.txt"

one() {  # one <group> <label> <run> <nodes> <rate> [extra helper args...]
  local group=$1 label=$2 run=$3 nodes=$4 rate=$5; shift 5
  local res
  res=$("$PY" "$HELPER" run --tracerd "$BIN/tracerd" --load "$BIN/tracerd-load" --work "$WORK" \
        --group "$group" --label "$label" --run "$run" --nodes "$nodes" --rate "$rate" --size "$SIZE" "$@")
  echo "$res" >> "$RESULTS"
  log "$group run $run: $(echo "$res" | "$PY" -c 'import json,sys; r=json.load(sys.stdin); print({k: r.get(k) for k in ("objects_per_s","acked","dropped","tracerd_us_per_object","tracerd_peak_rss_mib","ack_latency_ms","connected","foreign_cores","lines_on_disk","error")})')"
}

log "throughput at max load: nodes {$NODES}, $RUNS runs of ${DURATION}s"
for run in $(seq 1 "$RUNS"); do
  for n in $NODES; do
    one "max, $n nodes" "max-$n-$run" "$run" "$n" max --duration "$DURATION" --verify
  done
done

# Half of each node count's max, then $LAT_RUNS rounds alternating the node counts (so a
# slow spell of the host falls on both), each run with a stall probe per core
# (bench/stall_probe.py: when the VM left a core to no process, and how much of the slowest
# 1 % it shares). paired.py's report gives each count's p99 as the median of its runs with a
# 95 % bootstrap interval, like the paired ratios.
declare -A LAT_RATE=()
for n in $LAT_NODES; do
  rate=$("$PY" - "$RESULTS" "$n" <<'EOF2'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
n = int(sys.argv[2])
v = [r["objects_per_s"] for r in rows if r.get("group") == f"max, {n} nodes" and r.get("objects_per_s")]
print(round(statistics.median(v) / 2 / n, 1) if v else 0)
EOF2
)
  if [ "$rate" = 0 ]; then log "no max-load figure for $n nodes: skipping its latency runs"; continue; fi
  LAT_RATE[$n]=$rate
  log "ack latency at half load: $n nodes x $rate objects/s, $LAT_RUNS runs"
done
# The same runs with the log root on a journaled ext4 (a sparse image on $WORK, loop-mounted
# with `discard` so the truncated runs give their blocks back), alternated with the VM's disk.
JWORK=""
if [ "$LAT_JOURNAL" = 1 ] && [ -n "$LAT_NODES" ]; then
  if [ "$(id -u)" = 0 ] && command -v losetup > /dev/null && command -v mkfs.ext4 > /dev/null; then
    JWORK="$WORK/journaled"
    mkdir -p "$JWORK"
    if ! mountpoint -q "$JWORK"; then
      rm -f "$WORK/journaled.img"
      truncate -s 32G "$WORK/journaled.img"
      mkfs.ext4 -q -F "$WORK/journaled.img"
      mount -o loop,discard "$WORK/journaled.img" "$JWORK"
    fi
    trap 'umount "$JWORK" 2>/dev/null || true; rm -f "$WORK/journaled.img"' EXIT
    echo "Journaled runs' log root: $(fs_of "$JWORK"), an image on the VM's disk." >> "$WORK/machine.txt"
  else
    log "not root, or no losetup/mkfs.ext4: skipping the journaled-ext4 latency runs"
  fi
fi
for run in $(seq 1 "$LAT_RUNS"); do
  for n in $LAT_NODES; do
    [ -n "${LAT_RATE[$n]:-}" ] || continue
    rate=${LAT_RATE[$n]}
    one "50% load, $n nodes ($rate/s each)" "half-$n-$run" "$run" "$n" "$rate" --duration "$DURATION" \
      --verify --stall-probe
    if [ -n "$JWORK" ]; then
      one "50% load, $n nodes ($rate/s each), journaled ext4" "half-$n-$run-j" "$run" "$n" "$rate" \
        --duration "$DURATION" --verify --stall-probe --work "$JWORK"
    fi
  done
done

log "idle fleet: $IDLE_NODES nodes, $IDLE_RUNS runs"
for run in $(seq 1 "$IDLE_RUNS"); do
  one "idle, $IDLE_NODES nodes" "idle-$run" "$run" "$IDLE_NODES" 0 --duration 5 --connect-timeout 60
done

# The cost of TLS on ingest (issue 17; bench/tls.py, self-contained): tracerd-load at max rate
# over plain TCP and over mutual TLS, alternating A B A B, objects/s and CPU per object of
# both processes. Knobs: TLS (1; 0 skips it), TLS_NODES ("10 100"); RUNS, DURATION, SIZE.
tls_cost() {
  log "TLS cost: nodes {$TLS_NODES}, $RUNS A B pairs of ${DURATION}s, plain TCP vs mutual TLS"
  "$PY" "$ROOT/bench/tls.py" --tracerd "$BIN/tracerd" --load "$BIN/tracerd-load" \
    --work "$WORK/tls" --nodes "$TLS_NODES" --runs "$RUNS" --duration "$DURATION" \
    --size "$SIZE" > "$WORK/tls.md" || log "TLS cost: a run failed (see $WORK/tls)"
}
TLS=${TLS:-1}
TLS_NODES=${TLS_NODES:-"10 100"}
: > "$WORK/tls.md"
if [ "$TLS" = 1 ]; then tls_cost; fi

PEER_RESULTS="$WORK/peers/results.jsonl"
if [ "$PEERS" = 1 ]; then
  if [ ! -x "$PEER_BENCH" ]; then
    log "peer-bench.sh not found at $PEER_BENCH: skipping peers"
  else
    if ! command -v rsyslogd >/dev/null || ! command -v socat >/dev/null; then
      log "installing the peers (peer-bench.sh setup)"
      bash "$PEER_BENCH" setup >&2
    fi
    mkdir -p "$WORK/peers"
    log "physical limits (peer-bench.sh limits)"
    WORK="$WORK/peers" bash "$PEER_BENCH" limits > "$WORK/limits.txt" || true
    log "peers: $PEER_RECEIVERS, K {$PEER_KS}, N=$PEER_N, $RUNS runs"
    # A shared machine is rarely idle: wait briefly, never retry for long.
    WORK="$WORK/peers" N="$PEER_N" KS="$PEER_KS" RUNS="$RUNS" RECEIVERS="$PEER_RECEIVERS" \
      QUIET_WAIT=5 RETRIES=0 RUN_TIMEOUT=60 bash "$PEER_BENCH" bench > "$WORK/peers.md" || true
  fi
fi

PAIRED="$WORK/paired.jsonl"
: > "$PAIRED"
if [ "$PAIRS" -gt 0 ]; then
  if [ -x "$PEER_BENCH" ] && { ! command -v rsyslogd >/dev/null || ! command -v socat >/dev/null; }; then
    log "installing the peers (peer-bench.sh setup)"
    bash "$PEER_BENCH" setup >&2
  fi
  if [ -x "$PEER_BENCH" ] && command -v rsyslogd >/dev/null; then
    log "paired: $PAIRS pairs of tracerd and rsyslog imptcp, $PAIR_SENDERS senders, A B A B"
    "$PY" "$ROOT/bench/paired.py" pairs --what rsyslog --pairs "$PAIRS" --tracerd "$BIN/tracerd" \
      --load "$BIN/tracerd-load" --work "$WORK" --nodes "$PAIR_SENDERS" --duration "$DURATION" \
      --size "$SIZE" --peer-bench "$PEER_BENCH" --peer-n "$PAIR_N" --results "$PAIRED"
  else
    log "paired: rsyslog or peer-bench.sh missing: skipping the rsyslog pairs"
  fi
  if [ "$HERMOD" = 1 ]; then
    HERMOD_TRACER=${HERMOD_TRACER:-$WORK/hermod/bin/hermod-tracer}
    if [ ! -x "$HERMOD_TRACER" ]; then
      log "installing hermod-tracer 1.0.1 into $WORK/hermod (cargo install; minutes)"
      CARGO_TARGET_DIR="$WORK/hermod-build" cargo install hermod-tracer --version 1.0.1 \
        --root "$WORK/hermod" --quiet >&2
      rm -rf "$WORK/hermod-build"
    fi
    log "paired: $PAIRS pairs of tracerd and hermod-tracer, Cardano protocol, $CARDANO_NODES nodes, A B A B"
    "$PY" "$ROOT/bench/paired.py" pairs --what cardano --pairs "$PAIRS" --tracerd "$BIN/tracerd" \
      --hermod "$HERMOD_TRACER" --load "$BIN/tracerd-load" --work "$WORK" --nodes "$CARDANO_NODES" \
      --duration "$DURATION" --size "$SIZE" --results "$PAIRED"
  fi
fi

{
  echo "## tracerd benchmark ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  cat "$WORK/machine.txt"
  echo "Workload: ${SIZE}-byte machine JSON per object, TCP on 127.0.0.1, rotation on (10 MB files), ForMachine; ${DURATION} s per run; median (min–max, CV) of $RUNS runs."
  echo
  "$PY" "$HELPER" report --results "$RESULTS" --peers "$PEER_RESULTS"
  if [ -s "$PAIRED" ] || [ -n "$LAT_NODES" ]; then
    echo
    echo "Paired rows (A B A B in this run) and the half-load latency rows (bench/paired.py):"
    echo
    "$PY" "$ROOT/bench/paired.py" report --results "$PAIRED" --latency "$RESULTS"
  fi
  if [ -s "$WORK/tls.md" ]; then
    echo
    echo "The cost of TLS on ingest (bench/tls.py, plain TCP and mutual TLS alternating):"
    echo
    cat "$WORK/tls.md"
  fi
  if [ -s "$WORK/limits.txt" ]; then
    echo
    echo "Physical limits (peer-bench.sh limits):"
    echo
    echo '```'
    cat "$WORK/limits.txt"
    echo '```'
  fi
  echo
  echo "Total time of bench/run.sh: $(( $(date +%s) - started )) s."
} > "$WORK/table.md"
cat "$WORK/table.md"
# The runs' emptied directories (bench/procs.py `spend`): deleted only now, since deleting
# them between runs would slow the next run's file creation.
rm -rf "$WORK/spent"
