"""The cost of TLS on ingest (issue 17): plain TCP against mutual TLS, alternating A B A B.

For each node count and run, a fresh tracerd on 127.0.0.1 (rotation on, 10 MB files,
ForMachine) serves `tracerd-load --rate max` once over plain TCP (A) and once over mutual TLS
(B: `tracerd.native.tls` with a client CA; tracerd-load with `--tls-ca --tls-cert --tls-key`),
the two back to back so both see the same machine. A run counts only if every object was
acknowledged and found on disk. tracerd's CPU is utime+stime from /proc/<pid>/stat,
tracerd-load's from wait4's rusage. Certificates (ECDSA P-256, as a deployment would make
them) come from the openssl CLI.

Prints the markdown section recorded in BENCHMARKS.md ("The cost of TLS"): per node count the
median (min-max) of objects/s and CPU µs per object of each side, and the TLS/plain ratios of
each A B pair. Bounded: every tracerd-load run by its duration, a 30 s drain and a 60 s
connect timeout; tracerd by a 15 s stop.
"""
import argparse, json, os, shutil, signal, socket, statistics, subprocess, sys, time
from procs import free_port, proc_cpu

MAGIC = 764824073


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, in `d`."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-days", "2", "-subj", "/CN=bench-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    for name, usage, san in [("server", "serverAuth", "IP:127.0.0.1"),
                             ("client", "clientAuth", "DNS:load.nodes")]:
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(f"basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                    f"extendedKeyUsage={usage}\nsubjectAltName={san}\n")
        openssl("req", *ec, "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                "-out", f"{name}.pem", cwd=d)


CONFIG = """networkMagic: {magic}
network: null
hasPrometheus: null
logging:
  - logRoot: {logs}
    logMode: FileMode
    logFormat: ForMachine
rotation:
  rpFrequencySecs: 60
  rpLogLimitBytes: 10000000
  rpMaxAgeHours: 24
  rpKeepFilesNum: 100000
tracerd:
  native:
    acceptAt: ["127.0.0.1:{port}"]
{tls}  limits:
    maxConnections: 20000
"""

TLS = """    tls:
      certificateFile: {pki}/server.pem
      certificateKeyFile: {pki}/server.key
      clientCaFile: {pki}/ca.pem
"""


def lines_on_disk(logs):
    n = 0
    for root, _, files in os.walk(logs):
        for name in files:
            if name.startswith("node-") and name.endswith(".json"):
                with open(os.path.join(root, name), "rb") as f:
                    n += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return n


def one(args, pki, nodes, tls):
    work = os.path.join(args.work, "run")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    port = free_port()
    logs = os.path.join(work, "logs")
    config = os.path.join(work, "tracerd.yaml")
    with open(config, "w") as f:
        f.write(CONFIG.format(magic=MAGIC, logs=logs, port=port,
                              tls=TLS.format(pki=pki) if tls else ""))
    err = open(os.path.join(work, "tracerd.err"), "w")
    d = subprocess.Popen([args.tracerd, "-c", config], stdout=subprocess.DEVNULL, stderr=err,
                         cwd=work)
    try:
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if d.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"tracerd did not start: {open(err.name).read()}")
                time.sleep(0.05)
        cmd = [args.load, "--connect", f"127.0.0.1:{port}", "--magic", str(MAGIC),
               "--nodes", str(nodes), "--rate", "max", "--duration", str(args.duration),
               "--size", str(args.size), "--drain-timeout", "30", "--connect-timeout", "60"]
        if tls:
            cmd += ["--tls-ca", f"{pki}/ca.pem", "--tls-cert", f"{pki}/client.pem",
                    "--tls-key", f"{pki}/client.key"]
        cpu0 = proc_cpu(d.pid)
        load_err = open(os.path.join(work, "load.err"), "w+")
        load = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=load_err)
        out = load.stdout.read()  # tracerd-load's run is bounded (duration, drain, connect)
        _, status, ru = os.wait4(load.pid, 0)
        load.returncode = os.waitstatus_to_exitcode(status)
        load_err.seek(0)
        errs = load_err.read()
        cpu1 = proc_cpu(d.pid)
    finally:
        if d.poll() is None:
            d.send_signal(signal.SIGTERM)
            try:
                d.wait(15)
            except subprocess.TimeoutExpired:
                d.kill()
                d.wait()
    if load.returncode != 0:
        raise SystemExit(f"tracerd-load failed: {errs}")
    r = json.loads(out.decode().strip().splitlines()[-1])
    on_disk = lines_on_disk(logs)
    ok = r["acked"] == r["sent"] == on_disk and r["dropped"] == 0
    r.update({"tls": tls, "nodes": nodes, "on_disk": on_disk, "ok": ok,
              "tracerd_cpu_s": cpu1 - cpu0,
              "tracerd_us_per_object": (cpu1 - cpu0) / max(r["acked"], 1) * 1e6,
              "load_us_per_object": (ru.ru_utime + ru.ru_stime) / max(r["acked"], 1) * 1e6})
    return r


def fmt(v, d=0):
    med = statistics.median(v)
    return f"{med:,.{d}f} ({min(v):,.{d}f}–{max(v):,.{d}f})"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tracerd", required=True)
    p.add_argument("--load", required=True)
    p.add_argument("--work", default="/tmp/tracerd-bench/tls")
    p.add_argument("--nodes", default="10 100")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=5)
    p.add_argument("--size", type=int, default=160)
    args = p.parse_args()
    args.tracerd, args.load = os.path.abspath(args.tracerd), os.path.abspath(args.load)
    os.makedirs(args.work, exist_ok=True)
    pki = os.path.join(args.work, "pki")
    shutil.rmtree(pki, ignore_errors=True)
    os.makedirs(pki)
    make_pki(pki)
    rows = []
    for n in [int(x) for x in args.nodes.split()]:
        for run in range(1, args.runs + 1):
            for tls in (False, True):
                r = one(args, pki, n, tls)
                r["run"] = run
                rows.append(r)
                print(f"[tls] {n} nodes run {run} {'TLS  ' if tls else 'plain'}: "
                      f"{r['objects_per_s']:,.0f} objects/s, tracerd {r['tracerd_us_per_object']:.2f} µs/object, "
                      f"load {r['load_us_per_object']:.2f} µs/object, ok={r['ok']}",
                      file=sys.stderr, flush=True)
    with open(os.path.join(args.work, "tls.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print("| nodes | transport | runs | objects/s | tracerd CPU µs per object | tracerd-load CPU µs per object | all acked & on disk |")
    print("|---|---|---|---|---|---|---|")
    ratios = {}
    for n in sorted({r["nodes"] for r in rows}):
        for tls in (False, True):
            rs = [r for r in rows if r["nodes"] == n and r["tls"] == tls]
            print(f"| {n} | {'mutual TLS' if tls else 'plain TCP'} | {len(rs)} | "
                  f"{fmt([r['objects_per_s'] for r in rs])} | "
                  f"{fmt([r['tracerd_us_per_object'] for r in rs], 2)} | "
                  f"{fmt([r['load_us_per_object'] for r in rs], 2)} | "
                  f"{'yes' if all(r['ok'] for r in rs) else 'NO'} |")
        pairs = [(a, b) for a in rows for b in rows if a["nodes"] == b["nodes"] == n
                 and a["run"] == b["run"] and not a["tls"] and b["tls"]]
        ratios[n] = (
            [b["objects_per_s"] / a["objects_per_s"] for a, b in pairs],
            [b["tracerd_us_per_object"] / a["tracerd_us_per_object"] for a, b in pairs],
        )
    print()
    for n, (thr, cpu) in ratios.items():
        print(f"- {n} nodes, TLS / plain of each A B pair: objects/s × {fmt(thr, 2)}, "
              f"tracerd CPU per object × {fmt(cpu, 2)}")
    if not all(r["ok"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
