"""tracerd side of bench/run.sh: one measured run of tracerd under tracerd-load, and the report.

`run`: starts a fresh tracerd (rotation on, 10 MB files, machine format, TCP on 127.0.0.1),
runs tracerd-load against it, and prints one JSON line: tracerd-load's summary plus tracerd's
CPU seconds (utime+stime from /proc/<pid>/stat), peak RSS (VmHWM), the largest VmRSS sampled
while the load ran (and, with the idle fleet, `tracerd_connected_rss_mib`: the largest while
every node was connected and idle, before they close), the most threads sampled, the lines and bytes found on disk, the host's CPU use during the run
(so a run disturbed by other work on the machine can be told apart), and `stages`: where a
batch's time went inside tracerd (`tracerd_ingest_stage_seconds`, scraped at the end; absent
for builds without it). tracerd-load's own summary (merged in) splits the ack latency on the
generator's side (`ack_stages_ms`, and `ack_noticed_ms`, `ack_steady_ms`). `--tracerd-prefix` /
`--load-prefix` run either process under a command that execs it (`chrt -f 10`, `nice -n -5`);
`--work /dev/shm/...` puts the log root on tmpfs and `--rotate-bytes N` sets the files' size limit
instead of 10 MB (bench/latency_matrix.sh uses all three). `--stall-probe` adds `host_stalls`:
when the VM or the kernel left a core to no process (bench/stall_probe.py), to tell a tail
that every process shared from tracerd's own.

`report`: turns the JSON lines of the tracerd runs and of peer-bench.sh into the markdown
tables of BENCHMARKS.md (median, min-max, coefficient of variation).
"""
import argparse, json, os, re, signal, socket, statistics, subprocess, sys, time, urllib.request
from procs import free_port, host_busy, host_steal, proc_cpu, proc_cpu_parts, proc_kb, proc_minflt, spend, stop
import stall_probe



CONFIG = """networkMagic: 764824073
network:
  tag: AcceptAt
  contents: "{sock}"
logging:
  - logRoot: {logs}
    logMode: FileMode
    logFormat: ForMachine
rotation:
  rpFrequencySecs: 60
  rpLogLimitBytes: 10000000
  rpMaxAgeHours: 24
  rpKeepFilesNum: 100000
hasPrometheus: {{epHost: 127.0.0.1, epPort: {http_port}}}
tracerd:
  native:
    acceptAt: ["127.0.0.1:{port}"]
  limits:
    maxConnections: 20000
"""


def disk_usage(logs):
    lines = nbytes = files = 0
    for root, _, names in os.walk(logs):
        for n in names:
            path = os.path.join(root, n)
            if os.path.islink(path) or not n.endswith(".json"):
                continue
            files += 1
            nbytes += os.path.getsize(path)
            with open(path, "rb") as f:
                while True:
                    b = f.read(1 << 22)
                    if not b:
                        break
                    lines += b.count(b"\n")
    return lines, nbytes, files


def stages(http_port):
    """tracerd's `tracerd_ingest_stage_seconds{stage}` (where a batch's time goes between
    its frame and its Ack) from /metrics: per stage the count, mean and p50/p99 in ms,
    interpolated within the histogram's buckets. Empty for a build without the metric."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10).read().decode()
    except OSError:
        return {}
    buckets, sums, counts = {}, {}, {}
    for line in text.splitlines():
        if not line.startswith("tracerd_ingest_stage_seconds"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        value = float(line.rsplit(" ", 1)[1])
        st = labels.get("stage")
        if "_bucket" in line:
            le = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
            buckets.setdefault(st, []).append((le, value))
        elif "_sum" in line:
            sums[st] = value
        elif "_count" in line:
            counts[st] = value

    def quantile(bs, q):
        bs = sorted(bs)
        target, lo, below = q * bs[-1][1], 0.0, 0.0
        for le, n in bs:
            if n >= target:
                if le == float("inf"):
                    return lo
                return lo + (le - lo) * (target - below) / max(n - below, 1)
            lo, below = le, n
        return lo

    out = {}
    for st, bs in buckets.items():
        if counts.get(st):
            out[st] = {"count": int(counts[st]), "mean_ms": round(sums[st] / counts[st] * 1e3, 3),
                       "p50_ms": round(quantile(bs, 0.5) * 1e3, 3),
                       "p99_ms": round(quantile(bs, 0.99) * 1e3, 3)}
    return out


def tail_at_stalls(at_s, longest, min_ms=5.0):
    """The share of the slowest 1 %'s objects (`ack_stages_ms.tail.at_s`: [hand-over time
    rounded down to 0.1 s, objects]) handed over in a 0.1 s bin from 0.1 s before to 0.2 s
    after the start of a stall of at least `min_ms` that the probes saw: the tail that waited
    behind a stall of the whole VM rather than behind tracerd. None without a tail."""
    total = sum(n for _, n in at_s)
    if not total:
        return None
    starts = [t for t, ms, _ in longest if ms >= min_ms]
    near = sum(n for t, n in at_s if any(t - 0.2 <= s <= t + 0.1 + 1e-9 for s in starts))
    return round(near / total, 2)


def cmd_run(a):
    work = os.path.join(a.work, f"run-{a.label}")
    spend(work, a.work)
    os.makedirs(work)
    logs = os.path.join(work, "logs")
    port, http_port = free_port(), free_port()
    cfg = os.path.join(work, "config.yaml")
    with open(cfg, "w") as f:
        text = CONFIG.format(logs=logs, port=port, http_port=http_port, sock=os.path.join(work, "cardano.sock"))
        if a.rotate_bytes:
            text = text.replace("rpLogLimitBytes: 10000000", f"rpLogLimitBytes: {a.rotate_bytes}")
        f.write(text)
    err = open(os.path.join(work, "tracerd.err"), "w")
    tracerd = subprocess.Popen(a.tracerd_prefix.split() + [a.tracerd, "-c", cfg],
                               stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if tracerd.poll() is not None or time.time() > deadline:
                print(json.dumps({"label": a.label, "error": "tracerd did not start"}))
                return
            time.sleep(0.05)
    time.sleep(0.2)  # let the probe connection's session end
    cpu0, busy0, t0 = proc_cpu(tracerd.pid), host_busy(), time.time()
    parts0, steal0 = proc_cpu_parts(tracerd.pid), host_steal()
    flt0 = proc_minflt(tracerd.pid)
    cmd = a.load_prefix.split() + [a.load, "--connect", f"127.0.0.1:{port}", "--nodes", str(a.nodes), "--rate", a.rate,
           "--duration", str(a.duration), "--size", str(a.size), "--drain-timeout", str(a.drain),
           "--connect-timeout", str(a.connect_timeout)] + (a.extra.split() if a.extra else [])
    probes = stall_probe.start(work) if a.stall_probe else None
    ru0, mono0 = os.times(), time.monotonic()
    load = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    max_rss = 0
    # (seconds since the load started, VmRSS KiB, threads), for the idle fleet's figures.
    timeline = []
    while load.poll() is None:
        rss = proc_kb(tracerd.pid, "VmRSS") or 0
        max_rss = max(max_rss, rss)
        timeline.append((time.time() - t0, rss, proc_kb(tracerd.pid, "Threads") or 0))
        time.sleep(0.25)
    out, errtext = load.communicate()
    ru1 = os.times()
    t1, busy1, cpu1 = time.time(), host_busy(), proc_cpu(tracerd.pid)
    parts1, steal1 = proc_cpu_parts(tracerd.pid), host_steal()
    flt1 = proc_minflt(tracerd.pid)
    hwm = proc_kb(tracerd.pid, "VmHWM")
    stalls = stall_probe.collect(probes, mono0) if probes else None
    staged = stages(http_port)
    stop(tracerd)
    try:
        res = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        res = {"error": "no summary from tracerd-load", "stderr": errtext[-2000:]}
    wall = max(t1 - t0, 1e-9)
    gen_cpu = (ru1.children_user - ru0.children_user) + (ru1.children_system - ru0.children_system)
    res.update({
        "label": a.label, "group": a.group, "run": a.run, "rotate_bytes": a.rotate_bytes or 10000000,
        "tracerd_cpu_s": round(cpu1 - cpu0, 3),
        "tracerd_minor_faults": (flt1 - flt0) if flt0 is not None and flt1 is not None else None,
        "tracerd_peak_rss_mib": round((hwm or 0) / 1024, 1),
        "tracerd_max_sampled_rss_mib": round(max_rss / 1024, 1),
        "gen_cpu_s": round(gen_cpu, 3),
        "wall_s": round(wall, 3),
        "host_busy_cores": round((busy1 - busy0) / wall, 2),
        # Time the hypervisor ran something else on this guest's cores.
        "host_steal_cores": round((steal1 - steal0) / wall, 2),
    })
    if parts0 and parts1:
        user, system = parts1[0] - parts0[0], parts1[1] - parts0[1]
        # tracerd's kernel share: mostly write(2)'s copy into the page cache. It rises when
        # new page-cache pages are slow to get (a VM whose free memory the host took back
        # must fault each one in: BENCHMARKS.md, "Issue 21, 2026-12-03 (eighth session)").
        res["tracerd_sys_share"] = round(system / max(user + system, 1e-9), 2)
    if staged:
        res["stages"] = staged
    if stalls:
        # Times in s after the generator's clock started (its `connect_s` after it was
        # started), as `ack_stages_ms.tail.at_s`.
        every = stalls.pop("stalls", [])
        for st in every:
            st[0] = round(st[0] - res.get("connect_s", 0.0), 2)
        tail = (res.get("ack_stages_ms") or {}).get("tail") or {}
        share = tail_at_stalls(tail.get("at_s") or [], every)
        if share is not None:
            stalls["tail_share_at_stalls"] = share
        stalls["longest"] = every[:12]
        res["host_stalls"] = stalls
    # Threads: the most sampled while the load ran (writer threads and blocking pool ones).
    res["tracerd_threads_peak"] = max((n for _, _, n in timeline), default=0)
    if "connect_s" in res:
        # Every node connected and idle: from a second after the generator reported them
        # connected until its duration ends (the generator counts both from after it started
        # its nodes, so this window ends before the nodes close). The settled idle fleet.
        lo = res["connect_s"] + 1.0
        hi = res["connect_s"] + a.duration
        inside = [rss for t, rss, _ in timeline if lo <= t <= hi]
        if inside:
            res["tracerd_connected_rss_mib"] = round(max(inside) / 1024, 1)
    if a.timeline:
        with open(a.timeline, "a") as f:
            f.write(json.dumps({"label": a.label, "run": a.run, "timeline": [
                (round(t, 2), round(rss / 1024, 1), n) for t, rss, n in timeline]}) + "\n")
    res["foreign_cores"] = round(res["host_busy_cores"] - (res["tracerd_cpu_s"] + gen_cpu) / wall, 2)
    if res.get("acked"):
        res["tracerd_us_per_object"] = round(res["tracerd_cpu_s"] / res["acked"] * 1e6, 3)
        res["tracerd_cpu_s_per_million"] = round(res["tracerd_cpu_s"] / res["acked"] * 1e6, 3)
        res["gen_us_per_object"] = round(gen_cpu / res["acked"] * 1e6, 3)
        if res["tracerd_minor_faults"] is not None:
            # Pages faulted in per million objects: allocator churn (buffers freed to the
            # kernel and taken again) shows here before it shows in the CPU figures.
            res["tracerd_faults_per_million"] = round(res["tracerd_minor_faults"] / res["acked"] * 1e6)
    if a.verify:
        lines, nbytes, files = disk_usage(logs)
        res.update({"lines_on_disk": lines, "bytes_on_disk": nbytes, "files_on_disk": files,
                    "bytes_per_line": round(nbytes / lines, 1) if lines else None})
    if not a.keep:
        spend(work, a.work)
    print(json.dumps(res), flush=True)


def stats(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    med = statistics.median(v)
    cv = statistics.pstdev(v) / statistics.mean(v) if len(v) > 1 and statistics.mean(v) else 0.0
    return med, min(v), max(v), cv, len(v)


def fmt(s, digits=0, scale=1.0):
    if s is None:
        return "n/a"
    med, lo, hi, cv, n = s
    f = lambda x: f"{x * scale:,.{digits}f}"
    return f"{f(med)} ({f(lo)}–{f(hi)}, CV {cv * 100:.0f} %)"


def cmd_report(a):
    rows = [json.loads(l) for l in open(a.results) if l.strip()]
    groups = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    out = []
    out.append("| workload | runs | objects/s | MiB/s written | tracerd CPU s per million objects | tracerd peak RSS MiB | ack p50 ms | ack p99 ms | all acked & on disk | gen CPU µs/object | foreign cores (max) |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for g, rs in groups.items():
        if g.startswith("idle"):
            continue
        ok = all(r.get("acked") == r.get("sent") and r.get("dropped") == 0 and
                 (r.get("lines_on_disk") in (None, r.get("acked"))) for r in rs)
        mibw = [r["bytes_on_disk"] / r["elapsed_s"] / 2**20 for r in rs if r.get("bytes_on_disk") and r.get("elapsed_s")]
        out.append("| " + " | ".join([
            g, str(len(rs)),
            fmt(stats([r.get("objects_per_s") for r in rs])),
            fmt(stats(mibw), 1),
            fmt(stats([r.get("tracerd_cpu_s_per_million") for r in rs]), 2),
            fmt(stats([r.get("tracerd_peak_rss_mib") for r in rs]), 1),
            fmt(stats([r.get("ack_latency_ms", {}).get("p50") for r in rs]), 2),
            fmt(stats([r.get("ack_latency_ms", {}).get("p99") for r in rs]), 2),
            "yes" if ok else "**no**",
            fmt(stats([r.get("gen_us_per_object") for r in rs]), 2),
            f"{max((r.get('foreign_cores') or 0) for r in rs):.2f}",
        ]) + " |")
    idle = [(g, rs) for g, rs in groups.items() if g.startswith("idle")]
    if idle:
        out.append("")
        out.append("| idle fleet | runs | nodes connected | tracerd RSS MiB while connected (max sampled) | tracerd peak RSS MiB (VmHWM) | RSS MiB, all connected and idle | threads (most) | connect time s |")
        out.append("|---|---|---|---|---|---|---|---|")
        for g, rs in idle:
            out.append("| " + " | ".join([
                g, str(len(rs)),
                fmt(stats([r.get("connected") for r in rs])),
                fmt(stats([r.get("tracerd_max_sampled_rss_mib") for r in rs]), 1),
                fmt(stats([r.get("tracerd_peak_rss_mib") for r in rs]), 1),
                fmt(stats([r.get("tracerd_connected_rss_mib") for r in rs]), 1),
                fmt(stats([r.get("tracerd_threads_peak") for r in rs])),
                fmt(stats([r.get("connect_s") for r in rs]), 1),
            ]) + " |")
    if a.peers and os.path.exists(a.peers):
        peers = [json.loads(l) for l in open(a.peers) if l.strip()]
        pg = {}
        for r in peers:
            pg.setdefault((r["receiver"], r["conns"]), []).append(r)
        out.append("")
        out.append("| peer (peer-bench.sh, same run) | senders | runs | lines/s | µs CPU per line | peak RSS MiB | intact / in order | tracerd objects/s ÷ peer lines/s (same sender count) |")
        out.append("|---|---|---|---|---|---|---|---|")
        for (rcv, k), rs in sorted(pg.items(), key=lambda x: (x[0][1], x[0][0])):
            lps = stats([r.get("lines_per_s") for r in rs])
            us = stats([r["recv_cpu_s"] / r["lines"] * 1e6 for r in rs if r.get("recv_cpu_s") is not None])
            ok = sum(1 for r in rs if r.get("verify_ok"))
            ordered = sum(1 for r in rs if r.get("order_ok"))
            tr = stats([r.get("objects_per_s") for r in groups.get(f"max, {k} nodes", [])])
            ratio = f"{tr[0] / lps[0]:.2f}" if tr and lps and lps[0] else "n/a"
            out.append("| " + " | ".join([
                rcv, str(k), str(len(rs)), fmt(lps), fmt(us, 2),
                fmt(stats([r.get("recv_peak_rss_mib") for r in rs]), 1),
                f"{ok} / {ordered} of {len(rs)}", ratio]) + " |")
    print("\n".join(out))


def main():
    ap = argparse.ArgumentParser()
    sp = ap.add_subparsers(dest="cmd", required=True)
    r = sp.add_parser("run")
    for k, d in [("--tracerd", None), ("--load", None), ("--work", "/tmp/tracerd-bench"),
                 ("--label", "x"), ("--group", "x"), ("--rate", "max"), ("--extra", ""),
                 # Commands that exec their argument (`nice -n -5`, `chrt -f 10`): run tracerd
                 # or tracerd-load under another priority (the pid stays the program's).
                 ("--tracerd-prefix", ""), ("--load-prefix", "")]:
        r.add_argument(k, default=d, required=d is None)
    r.add_argument("--nodes", type=int, required=True)
    r.add_argument("--run", type=int, default=1)
    r.add_argument("--duration", type=float, default=5)
    r.add_argument("--size", type=int, default=160)
    r.add_argument("--drain", type=float, default=30)
    r.add_argument("--connect-timeout", type=float, default=60)
    r.add_argument("--verify", action="store_true")
    r.add_argument("--keep", action="store_true")
    # Files' size limit instead of 10 MB (the default's every node rotating at the same
    # instant, since all start together at one rate: bench/latency_matrix.sh's `rotation`).
    r.add_argument("--rotate-bytes", type=int, default=0)
    # One SCHED_FIFO probe per core (bench/stall_probe.py): how long the VM or the kernel left
    # each core to no process while the load ran (`host_stalls`).
    r.add_argument("--stall-probe", action="store_true")
    r.add_argument("--timeline", default="", help="append (s, VmRSS MiB, threads) samples to this file")
    p = sp.add_parser("report")
    p.add_argument("--results", required=True)
    p.add_argument("--peers", default="")
    a = ap.parse_args()
    {"run": cmd_run, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
