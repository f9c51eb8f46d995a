#!/usr/bin/env bash
# Ack latency at half load, decomposed (issue 21): for 10 and 100 nodes, max-rate runs, then
# half-load runs of each experiment, one invocation, printing tracerd_bench.py's JSON lines
# (with tracerd-load's `ack_stages_ms` and tracerd's `stages`) to $OUT.
#   TRACERD=... LOAD=... OUT=... EXPS="base shm curve prio fifo fifo-t fifo-g linger rotation io" bash bench/latency_matrix.sh
set -u
here=$(cd "$(dirname "$0")" && pwd)
TRACERD=${TRACERD:?} LOAD=${LOAD:?} OUT=${OUT:?}
EXPS=${EXPS:-base shm curve prio linger}
NODES=${NODES:-10 100}
REPS=${REPS:-2}
run() { # label nodes rate [extra args to tracerd_bench.py run]
  local label=$1 nodes=$2 rate=$3; shift 3
  echo "$(date -u +%T) $label nodes=$nodes rate=$rate $* load=$(cut -d' ' -f1 /proc/loadavg)" >&2
  python3 "$here/tracerd_bench.py" run --tracerd "$TRACERD" --load "$LOAD" --nodes "$nodes" \
    --rate "$rate" --duration 5 --size 160 --verify --label "$label" --group "$label" "$@" >>"$OUT"
}
for n in $NODES; do
  for i in 1 2; do run "max-$n" "$n" max; done
  half=$(python3 -c "
import json,statistics,sys
v=[json.loads(l)['objects_per_s'] for l in open('$OUT') if '\"max-$n\"' in l]
print(round(statistics.median(v[-2:])/$n/2,1))")
  echo "half rate $n nodes: $half/s per node" >&2
  for r in $(seq "$REPS"); do
    for e in $EXPS; do
      case $e in
        base) run "half-$n" "$n" "$half" ;;
        shm) run "half-$n-disk" "$n" "$half"
             run "half-$n-shm" "$n" "$half" --work /dev/shm/tracerd-bench ;;
        curve) for f in 0.10 0.25 0.75; do
                 rate=$(python3 -c "print(round($half*2*$f,1))")
                 run "curve-$n-$f" "$n" "$rate"
               done ;;
        prio) run "half-$n-nice" "$n" "$half" --tracerd-prefix "nice -n -10" --load-prefix "nice -n -10"
              run "half-$n-fifo" "$n" "$half" --tracerd-prefix "chrt -f 10" --load-prefix "chrt -f 10" ;;
        fifo) run "half-$n-fifo" "$n" "$half" --tracerd-prefix "chrt -f 10" --load-prefix "chrt -f 10" ;;
        fifo-t) run "half-$n-fifo-tracerd" "$n" "$half" --tracerd-prefix "chrt -f 10" ;;
        fifo-g) run "half-$n-fifo-load" "$n" "$half" --load-prefix "chrt -f 10" ;;
        linger) for l in 0 1; do run "half-$n-linger$l" "$n" "$half" --extra "--linger $l"; done ;;
        # 10 MB files (every node rotates at the same instant: all start together at one rate)
        # against 1 GB ones (no rotation in a 5 s run).
        rotation) run "half-$n-rot10MB" "$n" "$half"
                  run "half-$n-rot1GB" "$n" "$half" --rotate-bytes 1000000000 ;;
        # The generator's forwarders on a runtime of their own (tracerd-load --io-threads).
        io) run "half-$n-io0" "$n" "$half"
            run "half-$n-io2" "$n" "$half" --extra "--io-threads 2" ;;
      esac
    done
  done
done
# The runs' emptied directories (bench/procs.py `spend`), deleted once no run follows.
rm -rf /tmp/tracerd-bench/spent /dev/shm/tracerd-bench/spent
