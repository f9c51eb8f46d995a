#!/usr/bin/env python3
"""Shipping cost (issue 18): tracerd's CPU per trace object and each sink's lag p99 at half the
ingest rate, for each sink (ClickHouse, remote_write to VictoriaMetrics, a Loki receiver) and
with shipping off, measured side by side in one run, alternating off/sink/off/sink.

1. max: tracerd-load --rate max for MAX_SECS s into a tracerd with shipping off: its ingest rate.
2. phases, each on a fresh tracerd (fresh log root and cursors) in the order
   off, clickhouse, off, remote_write, off, loki: NODES nodes at half that rate in all
   (tracerd-load's --rate is per node) for LOAD_SECS s;
   every SAMPLE s (in every phase, off included) /metrics gives the sink's lag (max over nodes of tracerd_sink_lag_seconds;
   tracerd_remote_write_lag_seconds for remote_write); after the load, wait (bounded) until the
   sink caught up. CPU = tracerd's utime+stime from the load's start until caught up, per
   acknowledged object.

Servers, all on loopback with their own temp data: clickhouse-server (Debian 18.16, config
copied from /etc/clickhouse-server with ports and paths rewritten), victoria-metrics, and a
Loki push receiver in this script (answers 204; counts bytes: the cost measured is tracerd's).
Every wait is bounded. Prints one JSON line per phase and a Markdown table.
Usage: bench/ship.py [target/release]
"""
import http.server, json, os, shutil, subprocess, sys, tempfile, threading, time
import urllib.request
from procs import free_port, proc_cpu, stop, wait_port

BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                      os.path.join(os.path.dirname(__file__), "..", "target", "release"))
TRACERD = os.path.join(BIN, "tracerd")
LOAD = os.path.join(BIN, "tracerd-load")
MAX_SECS = float(os.environ.get("MAX_SECS", 5))
LOAD_SECS = float(os.environ.get("LOAD_SECS", 10))
NODES = int(os.environ.get("NODES", 4))
SIZE = int(os.environ.get("SIZE", 160))
SAMPLE = 0.1
MAGIC = 764824073


def metric_lines(p):
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=5).read().decode()
    except Exception:
        return ""


def max_of(text, name):
    vals = []
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            try:
                vals.append(float(line.rsplit(" ", 1)[1]))
            except ValueError:
                pass
    return max(vals) if vals else None


def clickhouse(work):
    binary = "/usr/sbin/clickhouse-server"
    if not os.path.exists(binary):
        raise SystemExit("clickhouse-server is not installed: apt-get install clickhouse-server")
    d = os.path.join(work, "clickhouse")
    os.makedirs(d)
    hp = free_port()
    cfg = open("/etc/clickhouse-server/config.xml").read()
    cfg = (cfg.replace("/var/log/clickhouse-server/", f"{d}/log/")
              .replace("/var/lib/clickhouse/", f"{d}/data/")
              .replace("<http_port>8123</http_port>", f"<http_port>{hp}</http_port>")
              .replace("<tcp_port>9000</tcp_port>", f"<tcp_port>{free_port()}</tcp_port>")
              .replace("<interserver_http_port>9009</interserver_http_port>",
                       f"<interserver_http_port>{free_port()}</interserver_http_port>")
              .replace("<listen_host>::1</listen_host>", ""))
    open(f"{d}/config.xml", "w").write(cfg)
    shutil.copy("/etc/clickhouse-server/users.xml", f"{d}/users.xml")
    proc = subprocess.Popen([binary, f"--config-file={d}/config.xml"], cwd=d,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(hp, proc, "clickhouse-server")
    return proc, hp


def victoria(work):
    vp = free_port()
    try:
        proc = subprocess.Popen(["victoria-metrics", f"-storageDataPath={work}/vm",
                                 f"-httpListenAddr=127.0.0.1:{vp}", "-retentionPeriod=1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except FileNotFoundError:
        raise SystemExit("victoria-metrics is not installed: apt-get install victoria-metrics")
    wait_port(vp, proc, "victoria-metrics")
    return proc, vp


class LokiHandler(http.server.BaseHTTPRequestHandler):
    received = 0

    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        self.rfile.read(n)
        LokiHandler.received += n
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a):
        pass


def loki():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), LokiHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]


def config(work, http_port, native, sink):
    return (f"networkMagic: {MAGIC}\nnetwork: null\n"
            f"hasPrometheus: {{epHost: 127.0.0.1, epPort: {http_port}}}\n"
            f"logging: [{{logRoot: {work}/logs, logMode: FileMode, logFormat: ForMachine}}]\n"
            f"rotation: {{rpLogLimitBytes: 10000000, rpKeepFilesNum: 1000, rpMaxAgeHours: 24}}\n"
            f"tracerd:\n  native: {{acceptAt: [\"127.0.0.1:{native}\"]}}\n"
            f"  shipStateDir: {work}/ship\n{sink}")


def run_tracerd(work, sink):
    os.makedirs(work)
    hp, native = free_port(), free_port()
    path = os.path.join(work, "config.yaml")
    open(path, "w").write(config(work, hp, native, sink))
    proc = subprocess.Popen([TRACERD, "-c", path], cwd=work, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(work, "stderr.log"), "a"))
    wait_port(hp, proc, "tracerd")
    return proc, hp, native


def load(native, rate, secs):
    return subprocess.Popen([LOAD, "--connect", f"127.0.0.1:{native}", "--nodes", str(NODES),
                             "--rate", str(rate), "--duration", str(secs), "--size", str(SIZE)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def p99(xs):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.99 * len(xs)))]


def phase(work, name, sink, lag_metric, rate):
    proc, hp, native = run_tracerd(work, sink)
    try:
        time.sleep(1)
        c0, t0 = proc_cpu(proc.pid), time.time()
        lp = load(native, rate, LOAD_SECS)
        lags = []
        while lp.poll() is None and time.time() < t0 + LOAD_SECS + 60:
            # Every phase is scraped alike (rendering /metrics costs tracerd CPU too).
            v = max_of(metric_lines(hp), lag_metric or "tracerd_sink_lag_seconds")
            if lag_metric and v is not None:
                lags.append(v)
            time.sleep(SAMPLE)
        out = lp.communicate(timeout=60)[0]
        summary = json.loads(out.strip().splitlines()[-1])
        acked = summary.get("acked", 0)
        t_load = time.time()
        drain = 0.0
        if lag_metric:
            # Caught up: the lag gauge reads 0 (bounded).
            while time.time() < t_load + 120:
                v = max_of(metric_lines(hp), lag_metric)
                if v is not None:
                    lags.append(v)
                if v == 0.0 and (name != "remote_write" or time.time() > t_load + 2):
                    break
                time.sleep(SAMPLE)
            drain = time.time() - t_load
        cpu = proc_cpu(proc.pid) - c0
        text = metric_lines(hp)
        r = {"phase": name, "rate_per_node": rate, "acked": acked,
             "ingest_per_s": round(summary.get("objects_per_s", 0)),
             "cpu_s": round(cpu, 3), "cpu_us_per_object": round(1e6 * cpu / max(acked, 1), 3),
             "lag_p99_s": p99(lags), "lag_max_s": max(lags) if lags else None,
             "lag_samples": len(lags),
             "drain_s": round(drain, 2),
             "rows_sent": max_of(text, "tracerd_sink_rows_sent_total"),
             "samples_sent": max_of(text, "tracerd_remote_write_samples_sent_total"),
             "wall_s": round(time.time() - t0, 2)}
        print(json.dumps(r), flush=True)
        return r
    finally:
        stop(proc)


def main():
    for b in (TRACERD, LOAD):
        if not os.path.exists(b):
            raise SystemExit(f"{b} missing: cargo build --release --bin tracerd --bin tracerd-load")
    work = tempfile.mkdtemp(prefix="tracerd-ship-bench-")
    ch, chp = clickhouse(work)
    vm, vmp = victoria(work)
    lk, lkp = loki()
    print(json.dumps({"uptime": open("/proc/loadavg").read().strip()}), flush=True)
    try:
        proc, hp, native = run_tracerd(os.path.join(work, "max"), "")
        try:
            out = load(native, "max", MAX_SECS).communicate(timeout=MAX_SECS + 120)[0]
            max_rate = json.loads(out.strip().splitlines()[-1]).get("objects_per_s", 0)
        finally:
            stop(proc)
        # tracerd-load's --rate is per node.
        rate = max(1, int(max_rate / 2 / NODES))
        print(json.dumps({"max_ingest_per_s": round(max_rate), "half_per_node": rate}), flush=True)
        sinks = {
            "clickhouse": (f"  clickhouse: {{url: \"http://127.0.0.1:{chp}\", tracer: bench}}\n",
                           "tracerd_sink_lag_seconds"),
            "remote_write": (f"  remoteWrite: [{{url: \"http://127.0.0.1:{vmp}/api/v1/write\", "
                             f"intervalSecs: 1}}]\n", "tracerd_remote_write_lag_seconds"),
            "loki": (f"  loki: {{url: \"http://127.0.0.1:{lkp}\"}}\n", "tracerd_sink_lag_seconds"),
        }
        results = []
        for i, (name, (sink, lag)) in enumerate(sinks.items()):
            results.append(phase(os.path.join(work, f"phase-off{i}"), "off", "", None, rate))
            results.append(phase(os.path.join(work, f"phase-{name}"), name, sink, lag, rate))
        print(json.dumps({"uptime": open("/proc/loadavg").read().strip()}), flush=True)
        print()
        print(f"max ingest {round(max_rate)} objects/s (shipping off), half = {rate} objects/s "
              f"per node x {NODES} nodes, {SIZE}-byte objects, {LOAD_SECS:.0f} s per phase")
        print()
        print("| phase | acked | CPU µs/object | vs. the off run before it | sink lag p99 | lag max | caught up after the load |")
        print("|---|---|---|---|---|---|---|")
        prev = None
        for r in results:
            extra = ""
            if r["phase"] == "off":
                prev = r
            elif prev:
                extra = f"+{r['cpu_us_per_object'] - prev['cpu_us_per_object']:.2f} µs"
            fmt = lambda v: "—" if v is None else f"{v:.2f} s"
            print(f"| {r['phase']} | {r['acked']} | {r['cpu_us_per_object']:.2f} | {extra} | "
                  f"{fmt(r['lag_p99_s'])} | {fmt(r['lag_max_s'])} | "
                  f"{'—' if r['phase'] == 'off' else str(r['drain_s']) + ' s'} |")
    finally:
        stop(ch)
        stop(vm)
        lk.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
