"""Markdown rows of bench/latency_matrix.sh's JSON lines: per run, the generator's ack p50/p99,
its stages (tracerd-load's `ack_stages_ms`: queued, flight, notice, and the slowest 1 %'s
composition, and the tenths of a second of the run most of its groups were handed over in) and
tracerd's (`stages`: hop, server), p50 / p99 ms."""
import json, sys

def q(d, k):
    s = d.get(k) or {}
    if "p50" in s:
        return f"{s['p50']:.2f} / {s['p99']:.1f}"
    if "p50_ms" in s:
        return f"{s['p50_ms']:.2f} / {s['p99_ms']:.1f}"
    return "—"

print("| run | rate/node | objects/s | ack p50 / p99 | steady p99 | noticed p99 | queued | flight | notice | slowest 1 %: total = queued + flight + notice (linger share) | slowest 1 % handed over at s (groups) | tracerd hop | tracerd server | foreign cores | lines == acked |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    if not line.strip():
        continue
    r = json.loads(line)
    g = r.get("ack_stages_ms") or {}
    t = g.get("tail") or {}
    tail = (f"{t['total']:.1f} = {t['queued']:.1f} + {t['flight']:.1f} + {t['notice']:.1f} ({t.get('causes', {}).get('linger', 0):.2f})"
            if t else "—")
    at = sorted(t.get("at_s") or [], key=lambda x: -x[1])[:2]
    when = ", ".join(f"{s:.1f} ({n})" for s, n in at) or "—"
    lat = r.get("ack_latency_ms", {})
    st = r.get("stages", {})
    print("| " + " | ".join([
        r.get("label", "?"), str(r.get("rate")), f"{r.get('objects_per_s', 0):,.0f}",
        f"{lat.get('p50', 0):.2f} / {lat.get('p99', 0):.1f}",
        f"{r['ack_steady_ms']['p99']:.1f}" if "ack_steady_ms" in r else "—",
        f"{r['ack_noticed_ms']['p99']:.1f}" if "ack_noticed_ms" in r else "—",
        q(g, "queued"), q(g, "flight"), q(g, "notice"), tail, when,
        q(st, "hop"), q(st, "server"), f"{r.get('foreign_cores', 0):.2f}",
        "yes" if r.get("lines_on_disk") == r.get("acked") and r.get("acked") == r.get("sent") else "**no**",
    ]) + " |")
