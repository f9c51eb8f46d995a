"""Paired side-by-side runs for bench/run.sh (issue 21): tracerd against rsyslog and against
hermod-tracer, alternating A B A B in one invocation, and the variance-aware report.

Subcommands:

`cardano-run`: one run of a server (`--kind tracerd` or `--kind hermod`) started on the same
cardano-tracer config (`network: AcceptAt` on a Unix socket, one ForMachine file target,
rotation, `loRequestNum: 100`), pulled from by `tracerd-load --protocol cardano`; prints one
JSON line: the load's summary plus the server's CPU seconds (utime+stime of the process from
/proc/<pid>/stat), peak RSS and the lines found on disk.

`pairs`: runs `--pairs` pairs A B A B in one invocation and appends every run as a JSON line
to `--results`: `--what cardano` pairs tracerd and hermod-tracer (`cardano-run` twice);
`--what rsyslog` pairs tracerd (native, `tracerd_bench.py run`) with rsyslog imptcp
(`peer-bench.sh bench` with RUNS=1, KS=<senders>), both with the same number of senders.

`report`: the issue's table from those lines (and, with `--latency`, the half-load ack p99 rows
from bench/run.sh's runs: the median of the runs' p99 with its interval, the same rule). Every ratio is the median of the per-pair
ratios with a 95 % bootstrap confidence interval (percentile method, 10,000 resamples of the
pairs, fixed seed so a report is reproducible from its data), and each side's coefficient of
variation; a goal is "met" only if the interval's bound on the goal's side clears it (the lower
bound of a "at least" goal, the upper bound of an "at most" goal). Standard library only.
"""
import argparse, json, os, random, signal, statistics, subprocess, sys, time
from procs import proc_cpu, proc_kb, proc_minflt, spend, stop

HERE = os.path.dirname(os.path.abspath(__file__))


# ------------------------------------------------------------------------------- statistics

def cv(values):
    """Coefficient of variation (population standard deviation over the mean)."""
    v = [x for x in values if x is not None]
    if len(v) < 2 or not statistics.mean(v):
        return 0.0
    return statistics.pstdev(v) / statistics.mean(v)


def bootstrap_median_ci(values, level=0.95, resamples=10_000, seed=21):
    """Percentile bootstrap interval of the median of `values` (the pairs' ratios)."""
    v = [x for x in values if x is not None]
    if not v:
        return None
    if len(v) == 1:
        return (v[0], v[0])
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(v, k=len(v))) for _ in range(resamples))
    lo = meds[int((1 - level) / 2 * resamples)]
    hi = meds[min(resamples - 1, int((1 + level) / 2 * resamples))]
    return (lo, hi)


def summary(values, goal=None, at_least=True):
    """(median, (ci_lo, ci_hi), met) of per-pair values; met is None without a goal."""
    v = [x for x in values if x is not None]
    if not v:
        return None
    med = statistics.median(v)
    ci = bootstrap_median_ci(v)
    met = None
    if goal is not None:
        met = ci[0] >= goal if at_least else ci[1] <= goal
    return med, ci, met


# ------------------------------------------------------------------------------- processes

def lines_on_disk(root):
    lines = files = 0
    for d, _, names in os.walk(root):
        for n in names:
            path = os.path.join(d, n)
            if os.path.islink(path) or n.startswith("."):
                continue
            files += 1
            with open(path, "rb") as f:
                while True:
                    b = f.read(1 << 22)
                    if not b:
                        break
                    lines += b.count(b"\n")
    return lines, files


# The same cardano-tracer config for both servers (cardano-tracer's own keys only).
CARDANO_CONFIG = """networkMagic: 764824073
network:
  tag: AcceptAt
  contents: "{sock}"
logging:
  - logRoot: "{logs}"
    logMode: FileMode
    logFormat: ForMachine
rotation:
  rpFrequencySecs: 60
  rpLogLimitBytes: 10000000
  rpMaxAgeHours: 24
  rpKeepFilesNum: 100000
loRequestNum: 100
"""


def settle(pid, timeout=15.0, step=0.2, idle_s=0.01):
    """The CPU seconds of `pid` once two samples `step` apart differ by less than `idle_s`
    (or after `timeout`)."""
    deadline = time.time() + timeout
    last = proc_cpu(pid)
    while time.time() < deadline:
        time.sleep(step)
        now = proc_cpu(pid)
        if now is None or last is None or now - last < idle_s:
            return now if now is not None else last
        last = now
    return last


def cardano_run(kind, server, load, work, label, nodes, duration, size, keep=False):
    run_dir = os.path.join(work, f"run-{label}")
    spend(run_dir, work)
    os.makedirs(run_dir)
    sock, logs = os.path.join(run_dir, "tracer.sock"), os.path.join(run_dir, "logs")
    cfg = os.path.join(run_dir, "config.yaml")
    with open(cfg, "w") as f:
        f.write(CARDANO_CONFIG.format(sock=sock, logs=logs))
    args = [server, "-c", cfg] if kind == "tracerd" else [server, "--config", cfg]
    err = open(os.path.join(run_dir, f"{kind}.err"), "w")
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 20
    while not os.path.exists(sock):
        if p.poll() is not None or time.time() > deadline:
            stop(p)
            return {"label": label, "kind": kind, "error": f"{kind} did not start (see {err.name})"}
        time.sleep(0.05)
    time.sleep(0.2)
    cpu0, t0, flt0 = proc_cpu(p.pid), time.time(), proc_minflt(p.pid)
    cmd = [load, "--protocol", "cardano", "--connect", sock, "--nodes", str(nodes), "--rate", "max",
           "--duration", str(duration), "--size", str(size), "--drain-timeout", "30",
           "--connect-timeout", "30"]
    ru0 = os.times()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 90).stdout
    except subprocess.TimeoutExpired:
        out = ""
    ru1 = os.times()
    t1 = time.time()
    # The simulator counts as pulled what it wrote into replies; a server behind (a loaded
    # machine) may still have replies unread in its socket, and a Cardano reply has no
    # acknowledgement, so stopping it now would cut them off. Wait until its CPU time stops
    # moving (at most 15 s), and count that tail of work in its CPU per object.
    cpu1 = settle(p.pid)
    hwm = proc_kb(p.pid, "VmHWM")
    flt1 = proc_minflt(p.pid)
    time.sleep(0.5)  # let the last pulled objects reach the files
    stop(p)
    try:
        res = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        res = {"error": "no summary from tracerd-load"}
    lines, files = lines_on_disk(logs)
    gen = (ru1.children_user - ru0.children_user) + (ru1.children_system - ru0.children_system)
    res.update({"label": label, "kind": kind, "what": "cardano",
                "server_cpu_s": round((cpu1 or 0) - (cpu0 or 0), 3),
                "server_peak_rss_mib": round((hwm or 0) / 1024, 1),
                "gen_cpu_s": round(gen, 3), "wall_s": round(t1 - t0, 3),
                "lines_on_disk": lines, "files_on_disk": files})
    if res.get("acked"):
        res["server_us_per_object"] = round(res["server_cpu_s"] / res["acked"] * 1e6, 3)
        if flt0 is not None and flt1 is not None:
            res["server_faults_per_million"] = round((flt1 - flt0) / res["acked"] * 1e6)
    if not keep:
        spend(run_dir, work)
    return res


def cmd_cardano_run(a):
    print(json.dumps(cardano_run(a.kind, a.server, a.load, a.work, a.label, a.nodes, a.duration,
                                 a.size, a.keep)), flush=True)


def native_run(a, label):
    cmd = [sys.executable, os.path.join(HERE, "tracerd_bench.py"), "run", "--tracerd", a.tracerd,
           "--load", a.load, "--work", a.work, "--label", label, "--group", "paired",
           "--nodes", str(a.nodes), "--rate", "max", "--duration", str(a.duration),
           "--size", str(a.size), "--verify"]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    try:
        res = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        res = {"error": "no result from tracerd_bench.py"}
    res.update({"label": label, "kind": "tracerd", "what": "rsyslog"})
    if res.get("acked"):
        res["server_us_per_object"] = res.get("tracerd_us_per_object")
    return res


def rsyslog_run(a, label):
    peers = os.path.join(a.work, "paired-peers")
    os.makedirs(peers, exist_ok=True)
    results = os.path.join(peers, f"{label}.jsonl")
    env = dict(os.environ, WORK=peers, N=str(a.peer_n), KS=str(a.nodes), RUNS="1",
               RECEIVERS="rsyslog-imptcp", QUIET_WAIT="5", RETRIES="0", RUN_TIMEOUT="60",
               RESULTS=results, REPORT=os.path.join(peers, f"{label}.md"))
    subprocess.run(["bash", a.peer_bench, "bench"], env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    try:
        res = json.loads(open(results).read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        res = {"error": "no result from peer-bench.sh"}
    res.update({"label": label, "kind": "rsyslog", "what": "rsyslog"})
    if res.get("recv_cpu_s") is not None and res.get("lines"):
        res["server_us_per_object"] = round(res["recv_cpu_s"] / res["lines"] * 1e6, 3)
    return res


def cmd_pairs(a):
    out = open(a.results, "a")
    for i in range(1, a.pairs + 1):
        if a.what == "cardano":
            sides = [("tracerd", lambda l: cardano_run("tracerd", a.tracerd, a.load, a.work, l,
                                                       a.nodes, a.duration, a.size)),
                     ("hermod", lambda l: cardano_run("hermod", a.hermod, a.load, a.work, l,
                                                      a.nodes, a.duration, a.size))]
        else:
            sides = [("tracerd", lambda l: native_run(a, l)), ("rsyslog", lambda l: rsyslog_run(a, l))]
        for kind, run in sides:
            res = run(f"{a.what}-{kind}-{i}")
            res["pair"] = i
            out.write(json.dumps(res) + "\n")
            out.flush()
            print(f"[paired] {a.what} pair {i} {kind}: "
                  f"{ {k: res.get(k) for k in ('objects_per_s', 'lines_per_s', 'acked', 'lines_on_disk', 'server_us_per_object', 'error')} }",
                  file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- report

def pairs_of(rows, what, a_kind, b_kind):
    by = {}
    for r in rows:
        if r.get("what") == what and r.get("pair") is not None:
            by.setdefault(r["pair"], {})[r["kind"]] = r
    return [(p[a_kind], p[b_kind]) for _, p in sorted(by.items()) if a_kind in p and b_kind in p]


def fmt_row(name, values, goal, at_least, unit="×", digits=2, side_a=None, side_b=None, note=""):
    s = summary(values, goal, at_least)
    goal_text = "—" if goal is None else f"{'≥' if at_least else '≤'} {goal}{unit}"
    if s is None:
        return f"| {name} | n/a | {goal_text} | 0 | n/a | not measured{note} |"
    med, (lo, hi), met = s
    cvs = []
    if side_a is not None:
        cvs.append(f"{side_a[0]} CV {cv(side_a[1]) * 100:.0f} %")
    if side_b is not None:
        cvs.append(f"{side_b[0]} CV {cv(side_b[1]) * 100:.0f} %")
    f = lambda x: f"{x:,.{digits}f}"
    verdict = "no goal" if met is None else "**met**" if met else "not met"
    return (f"| {name} | {f(med)}{unit} (95 % CI {f(lo)}–{f(hi)}) | {goal_text} | "
            f"{len([v for v in values if v is not None])} | {', '.join(cvs) or 'n/a'} | "
            f"{verdict}{note} |")


def ok(r):
    return not r.get("error") and (r.get("acked") or r.get("lines_per_s"))


# The suffix of bench/run.sh's half-load groups whose log root is a journaled ext4 image.
JOURNALED = "journaled ext4"
# A rotation (the `rotate` stage: new file, `node.<ext>` swapped) slower than this on average
# is the inode allocator skipping recently freed inodes (ext4 without a journal): ~0.05 ms
# in a quiet directory tree (BENCHMARKS.md, eighth and tenth sessions).
SLOW_ROTATION_MS = 0.3


def latency_rows(path, goal_ms=5.0, stall_ms=5.0):
    """The half-load rows from bench/run.sh's tracerd runs (`tracerd_bench.py run` lines of
    groups "50% load, N nodes (...)"): per node count, the ack p99 as the median of its runs
    with a 95 % bootstrap interval ("met" only if the interval's upper bound is within the
    goal), and how many runs had a stall of the whole VM (`host_stalls`, bench/stall_probe.py)
    of at least `stall_ms`, with the share of those runs' slowest 1 % handed over at one, and
    how many rotated slowly. Runs on run.sh's journaled ext4 image have rows of their own."""
    if not path or not os.path.exists(path):
        return []
    rows = [json.loads(l) for l in open(path) if l.strip()]
    by = {}
    for r in rows:
        g = r.get("group", "")
        if g.startswith("50% load, ") and r.get("ack_latency_ms") and not r.get("error"):
            # run.sh's journaled-ext4 runs get rows of their own, after the VM's disk.
            journaled = g.endswith(JOURNALED)
            by.setdefault((journaled, r.get("nodes") or 0), []).append(r)
    out = []
    for (journaled, nodes), runs in sorted(by.items()):
        p99 = [r["ack_latency_ms"]["p99"] for r in runs]
        stalled = [r for r in runs if (r.get("host_stalls") or {}).get("max_ms", 0) >= stall_ms]
        shares = [r["host_stalls"].get("tail_share_at_stalls") for r in stalled]
        shares = [x for x in shares if x is not None]
        note = (f"; {len(stalled)} of {len(runs)} runs had a VM stall ≥ {stall_ms:g} ms"
                + (f" (share of their slowest 1 % at one: {', '.join(f'{x:.2f}' for x in shares)})"
                   if shares else ""))
        if not any(r.get("host_stalls") for r in runs):
            note = ""
        rotations = [(r.get("stages") or {}).get("rotate", {}).get("mean_ms") for r in runs]
        slow = [x for x in rotations if x is not None and x >= SLOW_ROTATION_MS]
        if slow:
            note += (f"; {len(slow)} of {len(runs)} runs rotated slowly (mean ≥ {SLOW_ROTATION_MS:g} ms"
                     f" per file: {', '.join(f'{x:.2f}' for x in slow)})")
        rate = runs[0].get("rate")
        where = JOURNALED if journaled else "VM's disk"
        out.append(fmt_row(f"ack p99 at half load, {nodes} nodes ({rate}/s each), {where}, ms, median of runs",
                           p99, goal_ms, False, unit=" ms",
                           side_a=("p99", p99), note=note))
    return out


def cmd_report(a):
    rows = [json.loads(l) for l in open(a.results) if l.strip()] if os.path.exists(a.results) else []
    out = ["| measure (paired, same run) | median (95 % bootstrap CI) | goal | pairs | coefficient of variation | verdict |",
           "|---|---|---|---|---|---|"]
    rs = [(t, r) for t, r in pairs_of(rows, "rsyslog", "tracerd", "rsyslog") if ok(t) and ok(r)]
    out.append(fmt_row(
        "native ingest ÷ rsyslog imptcp, objects/s ÷ lines/s",
        [t["objects_per_s"] / r["lines_per_s"] for t, r in rs], 2, True,
        side_a=("tracerd", [t["objects_per_s"] for t, _ in rs]),
        side_b=("rsyslog", [r["lines_per_s"] for _, r in rs])))
    out.append(fmt_row(
        "rsyslog CPU per line ÷ tracerd CPU per object",
        [r["server_us_per_object"] / t["server_us_per_object"] for t, r in rs
         if r.get("server_us_per_object") and t.get("server_us_per_object")], 3, True,
        side_a=("tracerd", [t.get("server_us_per_object") for t, _ in rs]),
        side_b=("rsyslog", [r.get("server_us_per_object") for _, r in rs])))
    cs = [(t, h) for t, h in pairs_of(rows, "cardano", "tracerd", "hermod") if ok(t) and ok(h)]
    out.append(fmt_row(
        "Cardano protocol, tracerd ÷ hermod-tracer 1.0.1, objects/s",
        [t["objects_per_s"] / h["objects_per_s"] for t, h in cs], 5, True,
        side_a=("tracerd", [t["objects_per_s"] for t, _ in cs]),
        side_b=("hermod", [h["objects_per_s"] for _, h in cs])))
    out.append(fmt_row(
        "Cardano protocol, tracerd CPU µs per object",
        [t.get("server_us_per_object") for t, _ in cs], 1.0, False, unit=" µs",
        side_a=("tracerd", [t.get("server_us_per_object") for t, _ in cs])))
    out.append(fmt_row(
        "(for scale) hermod-tracer CPU µs per object",
        [h.get("server_us_per_object") for _, h in cs], None, False, unit=" µs",
        side_a=("hermod", [h.get("server_us_per_object") for _, h in cs])))
    out += latency_rows(a.latency)
    lost = [r for r in rows if r.get("what") == "cardano" and r.get("kind") == "tracerd"
            and r.get("acked") and r.get("lines_on_disk") != r.get("acked")]
    out.append("")
    out.append(f"Runs: {len(rs)} rsyslog pairs, {len(cs)} hermod pairs; "
               f"tracerd Cardano runs whose lines on disk differ from the objects pulled: {len(lost)}; "
               f"failed runs: {len([r for r in rows if r.get('error')])}.")
    print("\n".join(out))


def main():
    ap = argparse.ArgumentParser()
    sp = ap.add_subparsers(dest="cmd", required=True)
    c = sp.add_parser("cardano-run")
    c.add_argument("--kind", choices=["tracerd", "hermod"], required=True)
    c.add_argument("--server", required=True)
    p = sp.add_parser("pairs")
    p.add_argument("--what", choices=["cardano", "rsyslog"], required=True)
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--tracerd", required=True)
    p.add_argument("--hermod", default="")
    p.add_argument("--peer-bench", default=os.path.join(HERE, "..", "..", "shared", "bench", "peer-bench.sh"))
    p.add_argument("--peer-n", type=int, default=2_000_000)
    p.add_argument("--results", required=True)
    for q in (c, p):
        q.add_argument("--load", required=True)
        q.add_argument("--work", default="/tmp/tracerd-bench")
        q.add_argument("--nodes", type=int, default=10)
        q.add_argument("--duration", type=float, default=5)
        q.add_argument("--size", type=int, default=160)
    c.add_argument("--label", default="x")
    c.add_argument("--keep", action="store_true")
    r = sp.add_parser("report")
    r.add_argument("--results", required=True)
    r.add_argument("--latency", default="", help="bench/run.sh's tracerd runs: adds the half-load rows")
    a = ap.parse_args()
    {"cardano-run": cmd_cardano_run, "pairs": cmd_pairs, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
