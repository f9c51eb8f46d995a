"""Process and host probes the bench scripts share (stdlib only).

Imported as `from procs import ...` by the scripts beside it (`python3 bench/X.py` puts this
folder on `sys.path`).
"""
import os, shutil, signal, socket, subprocess, time

CLK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    """utime + stime of `pid` in seconds, or None once it has gone."""
    parts = proc_cpu_parts(pid)
    return None if parts is None else parts[0] + parts[1]


def proc_cpu_parts(pid):
    """(utime, stime) of `pid` in seconds, or None once it has gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()
    return int(rest[11]) / CLK, int(rest[12]) / CLK


def proc_minflt(pid):
    """Minor page faults of `pid` so far (each a page the kernel had to find and zero or map),
    or None once it has gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    return int(s[s.rindex(")") + 2:].split()[7])


def proc_kb(pid, key):
    """A `/proc/<pid>/status` figure in KiB (`VmHWM`, `VmRSS`), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def host_busy():
    """CPU seconds the whole host has spent busy since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / CLK


def host_steal():
    """CPU seconds the hypervisor has taken from this guest since boot (`steal`)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v + [0] * 8)[7] / CLK


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(p, proc, what, secs=60):
    """Waits until 127.0.0.1:`p` accepts a connection; exits if `proc` (if any) dies first."""
    deadline = time.time() + secs
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{what} exited early")
        try:
            socket.create_connection(("127.0.0.1", p), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not start")


def stop(p, grace=30):
    """SIGTERM, then SIGKILL after `grace` seconds; waits for the exit."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def spend(path, root):
    """Retires the run directory `path` without deleting a file: empties every regular file in
    it (their blocks are freed) and moves it into `root`/spent, which [`clean_spent`] deletes
    once the invocation is done.

    Deleting a run's files right before the next run starts makes that run slow at creating
    its own: ext4 without a journal (this VM's disk: `/proc/fs/jbd2/` is empty) never reuses
    an inode freed in the last 5 s, or in the last 305 s while its inode table block is not
    yet written back (`recently_deleted()` in `fs/ext4/ialloc.c`), and skips past each of
    them one by one. Right after 100 nodes' files were deleted, the next 100 nodes' directories
    and files cost tens of milliseconds of kernel CPU at once (`perf`: `recently_deleted`,
    `find_get_block_common`), at the run's start and at its synchronized rotation
    (BENCHMARKS.md, "Ack latency at half load, 2026-12-02 (fifth session)")."""
    if not os.path.lexists(path):
        return
    for dirpath, _, names in os.walk(path):
        for n in names:
            p = os.path.join(dirpath, n)
            if os.path.isfile(p) and not os.path.islink(p):
                try:
                    os.truncate(p, 0)
                except OSError:
                    pass
    spent = os.path.join(root, "spent")
    os.makedirs(spent, exist_ok=True)
    os.rename(path, os.path.join(spent, f"{os.path.basename(path)}-{time.time_ns()}"))


def clean_spent(root):
    """Deletes what [`spend`] kept under `root`/spent: call it once no run follows."""
    shutil.rmtree(os.path.join(root, "spent"), ignore_errors=True)
