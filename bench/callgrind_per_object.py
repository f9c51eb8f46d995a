"""Instructions per object of tracerd, deterministic (issue 21): tracerd under
`valgrind --tool=callgrind --instr-atstart=no`, instrumentation switched on with
`callgrind_control -i on` just before `tracerd-load` starts and off once it has drained, so
start-up and shutdown are not counted. Prints one JSON line: the objects acknowledged (native)
or pulled (Cardano), the instructions counted, their ratio, and the inclusive instructions per
object of the functions named with `--fn` (substring of callgrind_annotate's symbol names).

Under valgrind tracerd is the bottleneck, so batches (native) and replies (Cardano, 100
objects with `loRequestNum: 100`) are as full as at max load. The kernel's work (socket reads,
write(2), the page cache) is not counted.

    python3 bench/callgrind_per_object.py --tracerd target/release/tracerd \
        --load /work/bench/s7new/tracerd-load --protocol native --nodes 8 --duration 3
"""
import argparse, json, os, re, shutil, socket, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from procs import free_port, stop  # noqa: E402
from paired import CARDANO_CONFIG  # noqa: E402
from tracerd_bench import CONFIG  # noqa: E402


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while not pred():
        if time.time() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.1)


def tcp_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tracerd", required=True)
    ap.add_argument("--load", required=True)
    ap.add_argument("--protocol", choices=["native", "cardano"], default="native")
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--duration", type=float, default=3)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--fn", action="append", default=[], help="function to report (substring)")
    ap.add_argument("--out", help="keep the callgrind output here")
    ap.add_argument("--vg-arg", action="append", default=[], help="extra valgrind argument")
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="cg-per-object-")
    logs = os.path.join(work, "logs")
    cfg = os.path.join(work, "config.yaml")
    out_file = a.out or os.path.join(work, "callgrind.out")
    port, http_port = free_port(), free_port()
    sock = os.path.join(work, "tracer.sock")
    with open(cfg, "w") as f:
        if a.protocol == "native":
            f.write(CONFIG.format(logs=logs, port=port, http_port=http_port, sock=sock))
        else:
            f.write(CARDANO_CONFIG.format(sock=sock, logs=logs))
    vg = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                           f"--callgrind-out-file={out_file}"] + a.vg_arg + [a.tracerd, "-c", cfg],
                          stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "vg.err"), "w"))
    if a.protocol == "native":
        wait_for(lambda: tcp_open(port), 120, "tracerd's port")
        target = ["--connect", f"127.0.0.1:{port}"]
    else:
        wait_for(lambda: os.path.exists(sock), 120, "tracerd's socket")
        target = ["--protocol", "cardano", "--connect", sock]
    time.sleep(1)
    subprocess.run(["callgrind_control", "-i", "on", str(vg.pid)], check=True,
                   stdout=subprocess.DEVNULL)
    cmd = [a.load] + target + ["--nodes", str(a.nodes), "--rate", "max", "--duration",
                                str(a.duration), "--size", str(a.size), "--drain-timeout", "120",
                                "--connect-timeout", "60"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=a.duration + 300).stdout
    time.sleep(2)  # the last pulled objects reach the files
    subprocess.run(["callgrind_control", "-i", "off", str(vg.pid)], check=True,
                   stdout=subprocess.DEVNULL)
    stop(vg)
    vg.wait()
    summary = json.loads(out.strip().splitlines()[-1])
    objects = summary.get("acked") or summary.get("pulled")
    ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", out_file],
                         capture_output=True, text=True).stdout
    total = None
    fns = {}
    for line in ann.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+PROGRAM TOTALS", line)
        if m:
            total = int(m.group(1).replace(",", ""))
        m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$", line)
        if m:
            name = m.group(2)
            for want in a.fn:
                if want in name and want not in fns:
                    fns[want] = round(int(m.group(1).replace(",", "")) / objects, 1)
    if total is None:
        m = re.search(r"([\d,]+)\s+PROGRAM TOTALS", ann)
        total = int(m.group(1).replace(",", "")) if m else 0
    res = {"protocol": a.protocol, "objects": objects, "instructions": total,
           "per_object": round(total / objects, 1) if objects else None, "fns": fns,
           "load": {k: summary.get(k) for k in ("acked", "pulled", "objects_per_s")}}
    print(json.dumps(res), flush=True)
    if not a.out:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
