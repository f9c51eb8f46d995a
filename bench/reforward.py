#!/usr/bin/env python3
"""Re-forwarding benchmark (issue 16): one node -> tracerd A -> tracerd B, all on loopback,
release binaries. MODE=cardano (default): over Cardano's protocol (A's hasForwarding ConnectTo
B). MODE=native: over the native protocol from A's files (A's tracerd.forward to B's native
listener); lag is then A's tracerd_native_forward_lag_objects / _lag_seconds gauges, and the
backlog and catch-up are counted exactly as A's received minus B's written objects.

1. max: tracerd-load --rate max for DURATION s into A (A forwarding), A's ingest rate.
2. half: the same node at half that rate for HALF_SECS s; every SAMPLE s A's
   /metrics gives received and re-forwarded objects: lag = received - forwarded - dropped
   (objects), and lag / rate (seconds). B's written objects give the downstream's throughput.
3. outage: B stopped, OUTAGE s of load at half rate, B started again: how long until A's queue
   is drained and the catch-up rate (objects/s), with A's maxReconnectDelay (RECONNECT s).

Every wait is bounded. Prints one JSON line per phase and a Markdown summary.
Usage: bench/reforward.py [target/release]
"""
import json, os, shutil, subprocess, sys, tempfile, time, urllib.request
from procs import free_port, stop, wait_port

BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "target", "release")
BIN = os.path.abspath(BIN)
TRACERD = os.path.join(BIN, "tracerd")
LOAD = os.path.join(BIN, "tracerd-load")
DURATION = float(os.environ.get("DURATION", 5))
HALF_SECS = float(os.environ.get("HALF_SECS", 20))
OUTAGE = float(os.environ.get("OUTAGE", 60))
RECONNECT = int(os.environ.get("RECONNECT", 2))
SIZE = int(os.environ.get("SIZE", 160))
SAMPLE = 0.5
MAGIC = 764824073
MODE = os.environ.get("MODE", "cardano")



def metrics(p):
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=5).read().decode()
    except Exception:
        return {}
    out = {}
    for line in body.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        base = name.split("{", 1)[0]
        try:
            out[base] = out.get(base, 0.0) + float(value)
        except ValueError:
            pass
    return out


def native_main():
    """MODE=native: A forwards from its files to B over the native protocol."""
    work = tempfile.mkdtemp(prefix="tracerd-reforward-native-bench-")
    pa, pb, native, nb = free_port(), free_port(), free_port(), free_port()
    b_cfg = (f"networkMagic: {MAGIC}\nnetwork: null\n"
             f"hasPrometheus: {{epHost: 127.0.0.1, epPort: {pb}}}\n"
             f"logging: [{{logRoot: {work}/b/logs, logMode: FileMode, logFormat: ForMachine}}]\n"
             f"rotation: {{rpLogLimitBytes: 10000000, rpKeepFilesNum: 1000, rpMaxAgeHours: 24}}\n"
             f"tracerd: {{native: {{acceptAt: [\"127.0.0.1:{nb}\"]}}}}\n")
    a_cfg = (f"networkMagic: {MAGIC}\nnetwork: null\n"
             f"hasPrometheus: {{epHost: 127.0.0.1, epPort: {pa}}}\n"
             f"logging: [{{logRoot: {work}/a/logs, logMode: FileMode, logFormat: ForMachine}}]\n"
             f"rotation: {{rpLogLimitBytes: 10000000, rpKeepFilesNum: 1000, rpMaxAgeHours: 24}}\n"
             f"tracerd:\n  native: {{acceptAt: [\"127.0.0.1:{native}\"]}}\n"
             f"  shipStateDir: {work}/a/state\n"
             f"  forward:\n    - {{name: b, address: \"127.0.0.1:{nb}\"}}\n")
    b = start(work, "b", b_cfg, pb)
    a = start(work, "a", a_cfg, pa)

    def behind():
        # Exact: objects A holds that B has not written.
        return (metrics(pa).get("tracerd_trace_objects_received_total", 0)
                - metrics(pb).get("tracerd_trace_objects_written_total", 0))

    def drained(limit):
        deadline = time.time() + limit
        while time.time() < deadline:
            ma = metrics(pa)
            if behind() <= 0 and ma.get("tracerd_native_forward_lag_objects", 1) == 0:
                return True
            time.sleep(0.05)
        return False

    results = {}
    try:
        out = load(native, "max", DURATION).communicate(timeout=DURATION + 120)[0]
        summary = json.loads(out.strip().splitlines()[-1])
        max_rate = summary.get("objects_per_s", 0)
        results["max"] = {"acked": summary.get("acked"), "rate": round(max_rate)}
        drained(300)
        rate = max(1, int(max_rate / 2))
        base_b = metrics(pb).get("tracerd_trace_objects_written_total", 0)
        t0 = time.time()
        p = load(native, rate, HALF_SECS)
        lag_objects, lag_secs, exact = [], [], []
        while p.poll() is None and time.time() < t0 + HALF_SECS + 120:
            ma = metrics(pa)
            lag_objects.append(ma.get("tracerd_native_forward_lag_objects", 0))
            lag_secs.append(ma.get("tracerd_native_forward_lag_seconds", 0))
            exact.append(behind())
            time.sleep(SAMPLE)
        p.communicate(timeout=60)
        t_load = time.time() - t0
        drained(300)
        t_done = time.time() - t0
        written_b = metrics(pb).get("tracerd_trace_objects_written_total", 0) - base_b
        for xs in (lag_objects, lag_secs, exact):
            xs.sort()
        mid = lambda xs: xs[len(xs) // 2] if xs else None
        results["half"] = {
            "rate": rate, "secs": HALF_SECS, "b_written": int(written_b),
            "b_rate": round(written_b / t_load),
            "lag_objects_p50": mid(lag_objects), "lag_objects_max": lag_objects[-1] if lag_objects else None,
            "lag_secs_p50": mid(lag_secs), "lag_secs_max": lag_secs[-1] if lag_secs else None,
            "behind_p50": mid(exact), "behind_max": exact[-1] if exact else None,
            "drained_after_load_secs": round(t_done - t_load, 2),
        }
        written_before = metrics(pb).get("tracerd_trace_objects_written_total", 0)
        stop(b)
        p = load(native, rate, OUTAGE)
        peak = {"lag_objects": 0, "lag_secs": 0}
        while p.poll() is None:
            ma = metrics(pa)
            peak["lag_objects"] = max(peak["lag_objects"], ma.get("tracerd_native_forward_lag_objects", 0))
            peak["lag_secs"] = max(peak["lag_secs"], ma.get("tracerd_native_forward_lag_seconds", 0))
            time.sleep(1)
        p.communicate(timeout=120)
        received = metrics(pa).get("tracerd_trace_objects_received_total", 0)
        # B's counters start again at 0: its backlog is what A received beyond what B wrote.
        backlog = received - written_before
        t0 = time.time()
        b = start(work, "b", b_cfg, pb)
        first = None
        while time.time() < t0 + 600:
            w = metrics(pb).get("tracerd_trace_objects_written_total", 0)
            if first is None and w > 0:
                first = time.time() - t0
            if w >= backlog:
                break
            time.sleep(0.1)
        took = time.time() - t0
        results["outage"] = {
            "outage_secs": OUTAGE, "backlog": int(backlog), "peak_lag_objects": peak["lag_objects"],
            "peak_lag_secs": round(peak["lag_secs"], 1),
            "reconnect_secs": round(first or 0, 2), "drained_secs": round(took, 2),
            "catch_up_rate": round(backlog / max(took - (first or 0), 1e-3)),
            "a_rss_mb": round(metrics(pa).get("tracerd_process_resident_memory_bytes", 0) / 2**20),
        }
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    for k, v in results.items():
        print(json.dumps({"phase": k, **v}))


def start(work, name, cfg, http):
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "config.yaml")
    with open(path, "w") as f:
        f.write(cfg)
    proc = subprocess.Popen([TRACERD, "-c", path], cwd=d, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(d, "stderr.log"), "a"))
    wait_port(http, proc, name, secs=30)
    return proc


def lag(ma):
    return (ma.get("tracerd_trace_objects_received_total", 0)
            - ma.get("tracerd_reforwarded_objects_total", 0)
            - ma.get("tracerd_reforward_dropped_total", 0))


def load(native, rate, secs):
    return subprocess.Popen([LOAD, "--connect", f"127.0.0.1:{native}", "--nodes", "1",
                             "--rate", str(rate), "--duration", str(secs), "--size", str(SIZE)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def main():
    work = tempfile.mkdtemp(prefix="tracerd-reforward-bench-")
    pa, pb, native = free_port(), free_port(), free_port()
    b_cfg = (f"networkMagic: {MAGIC}\nnetwork: {{tag: AcceptAt, contents: \"{work}/b/c.sock\"}}\n"
             f"hasPrometheus: {{epHost: 127.0.0.1, epPort: {pb}}}\n"
             f"logging: [{{logRoot: {work}/b/logs, logMode: FileMode, logFormat: ForMachine}}]\n"
             f"rotation: {{rpLogLimitBytes: 10000000, rpKeepFilesNum: 1000, rpMaxAgeHours: 24}}\n"
             f"tracerd: {{native: {{acceptAt: [\"{work}/b/t.sock\"]}}}}\n")
    a_cfg = (f"networkMagic: {MAGIC}\nnetwork: null\n"
             f"hasPrometheus: {{epHost: 127.0.0.1, epPort: {pa}}}\n"
             f"logging: [{{logRoot: {work}/a/logs, logMode: FileMode, logFormat: ForMachine}}]\n"
             f"rotation: {{rpLogLimitBytes: 10000000, rpKeepFilesNum: 1000, rpMaxAgeHours: 24}}\n"
             f"hasForwarding:\n  - {{tag: ConnectTo, contents: [\"{work}/b/c.sock\"]}}\n  - null\n"
             f"  - {{queueSize: 16000000, maxReconnectDelay: {RECONNECT}}}\n"
             f"tracerd:\n  native: {{acceptAt: [\"127.0.0.1:{native}\"]}}\n"
             f"  limits: {{queueBytes: 8589934592, totalQueueBytes: 8589934592}}\n")
    b = start(work, "b", b_cfg, pb)
    a = start(work, "a", a_cfg, pa)
    results = {}
    try:
        # 1. max ingest with forwarding on.
        out = load(native, "max", DURATION).communicate(timeout=DURATION + 120)[0]
        summary = json.loads(out.strip().splitlines()[-1])
        max_rate = summary.get("objects_per_s", 0)
        results["max"] = {"acked": summary.get("acked"), "rate": round(max_rate)}
        deadline = time.time() + 120
        while lag(metrics(pa)) > 0 and time.time() < deadline:
            time.sleep(SAMPLE)
        # 2. half rate: lag samples.
        rate = max(1, int(max_rate / 2))
        base_b = metrics(pb).get("tracerd_trace_objects_written_total", 0)
        t0 = time.time()
        p = load(native, rate, HALF_SECS)
        lags = []
        while p.poll() is None and time.time() < t0 + HALF_SECS + 120:
            lags.append(lag(metrics(pa)))
            time.sleep(SAMPLE)
        p.communicate(timeout=60)
        t_load = time.time() - t0
        deadline = time.time() + 120
        while lag(metrics(pa)) > 0 and time.time() < deadline:
            time.sleep(0.05)
        t_done = time.time() - t0
        written_b = metrics(pb).get("tracerd_trace_objects_written_total", 0) - base_b
        lags.sort()
        results["half"] = {
            "rate": rate, "secs": HALF_SECS, "b_written": int(written_b),
            "b_rate": round(written_b / t_load),
            "lag_objects_p50": int(lags[len(lags) // 2]) if lags else None,
            "lag_objects_max": int(lags[-1]) if lags else None,
            "lag_secs_max": round(lags[-1] / rate, 3) if lags else None,
            "drained_after_load_secs": round(t_done - t_load, 2),
            "dropped": int(metrics(pa).get("tracerd_reforward_dropped_total", 0)),
        }
        # 3. outage.
        stop(b)
        p = load(native, rate, OUTAGE)
        p.communicate(timeout=OUTAGE + 120)
        backlog = lag(metrics(pa))
        b = start(work, "b", b_cfg, pb)
        t0 = time.time()
        deadline = t0 + 600
        first = None
        while time.time() < deadline:
            l = lag(metrics(pa))
            if first is None and l < backlog:
                first = time.time() - t0
            if l <= 0:
                break
            time.sleep(0.1)
        took = time.time() - t0
        results["outage"] = {
            "outage_secs": OUTAGE, "backlog": int(backlog), "reconnect_secs": round(first or 0, 2),
            "drained_secs": round(took, 2),
            "catch_up_rate": round(backlog / max(took - (first or 0), 1e-3)),
            "dropped": int(metrics(pa).get("tracerd_reforward_dropped_total", 0)),
            "a_rss_mb": round(metrics(pa).get("tracerd_process_resident_memory_bytes", 0) / 2**20),
        }
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    for k, v in results.items():
        print(json.dumps({"phase": k, **v}))


if __name__ == "__main__":
    native_main() if MODE == "native" else main()
