"""A stall probe: tells a pause of the whole VM (or of the kernel on a core) from a process's
own delay, while a benchmark runs.

One probe per core, each pinned to its core and run under SCHED_FIFO (when root): it sleeps
`--period-ms` and measures how late it woke. A SCHED_FIFO thread preempts every normal thread
at once, so it wakes late only when the core itself did not run this guest's code for that
long (the hypervisor ran something else: steal the guest may not see) or the kernel did not
schedule on it (a long section with preemption off). A late wake of a probe is therefore time
no process on that core could use, whatever it was doing.

`python3 bench/stall_probe.py --cpu N --out FILE [--period-ms 5] [--threshold-ms 2]` runs
until SIGTERM, then writes one JSON object to FILE: `rt` (whether SCHED_FIFO was granted),
`wakes`, and `stalls`: every wake later than the threshold as `[monotonic s, ms late]`.
`start(dir)` / `collect(probes)` run one per core from a bench script (stdlib only).
"""
import argparse, json, os, signal, subprocess, sys, time

HERE = os.path.abspath(__file__)


def probe(cpu, out, period_ms, threshold_ms):
    os.sched_setaffinity(0, {cpu})
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        rt = True
    except (PermissionError, OSError):
        rt = False
    period, threshold = period_ms / 1e3, threshold_ms / 1e3
    stalls, wakes = [], 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while not stop:
        t = time.monotonic()
        time.sleep(period)
        late = time.monotonic() - t - period
        wakes += 1
        if late > threshold:
            stalls.append([round(t, 4), round(late * 1e3, 2)])
    with open(out, "w") as f:
        json.dump({"cpu": cpu, "rt": rt, "wakes": wakes, "period_ms": period_ms, "stalls": stalls}, f)


def start(work, period_ms=5, threshold_ms=2):
    """One probe per core this process may run on; returns what `collect` needs."""
    probes = []
    for cpu in sorted(os.sched_getaffinity(0)):
        out = os.path.join(work, f"stall-probe-{cpu}.json")
        p = subprocess.Popen([sys.executable, HERE, "--cpu", str(cpu), "--out", out,
                              "--period-ms", str(period_ms), "--threshold-ms", str(threshold_ms)])
        probes.append((p, out))
    return probes


def collect(probes, since):
    """Stops the probes; returns their summary, stalls' times in seconds after `since` (a
    `time.monotonic()` value): the longest stall, the time lost to stalls per core, and every
    stall as `[s, ms, cpu]`, longest first (`stalls`)."""
    for p, _ in probes:
        p.send_signal(signal.SIGTERM)
    stalls, rt, wakes = [], True, 0
    for p, out in probes:
        try:
            p.wait(timeout=10)
            with open(out) as f:
                r = json.load(f)
        except (subprocess.TimeoutExpired, OSError, ValueError):
            p.kill()
            return {"error": f"stall probe {out} gave no result"}
        rt = rt and r["rt"]
        wakes += r["wakes"]
        stalls += [[round(t - since, 3), ms, r["cpu"]] for t, ms in r["stalls"]]
    stalls.sort(key=lambda s: -s[1])
    return {"rt": rt, "wakes": wakes, "cores": len(probes),
            "max_ms": stalls[0][1] if stalls else 0.0,
            "lost_ms_per_core": round(sum(s[1] for s in stalls) / max(len(probes), 1), 1),
            "stalls": stalls}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--period-ms", type=float, default=5)
    ap.add_argument("--threshold-ms", type=float, default=2)
    a = ap.parse_args()
    probe(a.cpu, a.out, a.period_ms, a.threshold_ms)
