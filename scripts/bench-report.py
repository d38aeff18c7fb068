#!/usr/bin/env python3
"""Renders the bench results (target/bench/lab.json, target/bench/apply.json) as the tables in
BENCHMARKS.md: every measure with min/median/max and its target, every side-by-side comparison
as a ratio of medians. Missed targets are listed, never dropped.

    scripts/bench-report.py [--write BENCHMARKS.md] [--command "..."] [--plot docs/bench-scale.png]

Without --write the tables go to stdout. With it, the part of the file between the
`<!-- bench:begin -->` and `<!-- bench:end -->` markers is replaced and the rest is kept, unless
lab.json comes from a subset run (WGMESH_BENCH_ONLY), which would drop the other rows: then the
tables are only printed. With --write (or --plot PATH), a run that includes the scale sweep also
draws convergence time against N into docs/bench-scale.png (gnuplot).
"""
import argparse
import json
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent

# id -> (statistic the target applies to, operator, value, text). The statistic is the median
# unless the target is about every sample ("0 lost", "0 writes", a ceiling on RSS).
TARGETS = {
    "convergence_lan_10": ("median", "<=", 3.0, "≤ 3 s (median)"),
    "convergence_dht_10": ("median", "<=", 10.0, "≤ 10 s (median)"),
    "join_10": ("median", "<=", 2.0, "≤ 2 s (median)"),
    "tick_writes": ("max", "<=", 0.0, "0 writes"),
    "tick_cpu": ("median", "<=", 5.0, "≤ 5 ms CPU (median)"),
    "tick_fake": ("median", "<=", 5.0, "≤ 5 ms CPU (median)"),
    "apply_userspace": ("median", "<=", 200.0, "≤ 200 ms (median)"),
    "apply_userspace_keepalive": ("median", "<=", 200.0, "≤ 200 ms (median)"),
    "apply_fake": ("median", "<=", 200.0, "≤ 200 ms (median)"),
    "idle_rss_wgmesh": ("max", "<=", 15.0, "≤ 15 MB (every node)"),
    "idle_cpu_wgmesh": ("max", "<=", 0.1, "≤ 0.1 % (every node)"),
    "routes_10": ("median", "<=", 2.0, "≤ 2 s (median)"),
    "restart_lost": ("max", "<=", 0.0, "0 lost (every run)"),
    # Issue 11, item 4: scale on this machine.
    "scale_converge_50": ("median", "<=", 10.0, "≤ 10 s"),
    "scale_converge_100": ("median", "<=", 30.0, "≤ 30 s"),
    "idle_wakeups_runs_10": ("median", "<=", 60.0, "≤ 60 /min (median of 3 runs)"),
}

# Targets that hold at every size of the scale sweep: id prefix -> target, as above.
SIZED_TARGETS = {
    "scale_sent_": ("max", "<=", 30.0, "≤ 30 /node/min (every node)"),
    "scale_rcvbuf_": ("max", "<=", 0.0, "0"),
}


def target_of(row_id):
    if row_id in TARGETS:
        return TARGETS[row_id]
    for prefix, target in SIZED_TARGETS.items():
        rest = row_id[len(prefix):]
        if row_id.startswith(prefix) and rest.isdigit():
            return target
    return None

# (text, numerator id, denominator id, target on the ratio or None, which way is better)
COMPARISONS = [
    ("convergence N=10: wgmesh (LAN) / Nebula", "convergence_lan_10", "convergence_nebula_10", None, "lower"),
    ("convergence N=10: wgmesh (DHT only) / Nebula", "convergence_dht_10", "convergence_nebula_10", None, "lower"),
    ("idle RSS: wgmesh daemon / Nebula", "idle_rss_wgmesh", "idle_rss_nebula", None, "lower"),
    ("idle RSS: wgmesh + wireguard-go / Nebula", "idle_rss_wgmesh_total", "idle_rss_nebula", None, "lower"),
    ("idle CPU: wgmesh daemon / Nebula", "idle_cpu_wgmesh", "idle_cpu_nebula", None, "lower"),
    ("idle CPU: wgmesh + wireguard-go / Nebula", "idle_cpu_wgmesh_total", "idle_cpu_nebula", None, "lower"),
    ("idle wakeups: wgmesh daemon / Nebula", "idle_wakeups_wgmesh", "idle_wakeups_nebula", None, "lower"),
    ("convergence N=10: wgmesh (LAN) / tinc", "convergence_lan_10", "convergence_tinc_10", None, "lower"),
    ("idle RSS: wgmesh daemon / tinc", "idle_rss_wgmesh", "idle_rss_tinc", None, "lower"),
    ("idle RSS: wgmesh + wireguard-go / tinc", "idle_rss_wgmesh_total", "idle_rss_tinc", None, "lower"),
    ("idle CPU: wgmesh daemon / tinc", "idle_cpu_wgmesh", "idle_cpu_tinc", None, "lower"),
    ("idle wakeups: wgmesh daemon / tinc", "idle_wakeups_wgmesh", "idle_wakeups_tinc", None, "lower"),
    ("data plane: wgmesh tunnel / hand-made wireguard-go", "iperf_wgmesh", "iperf_baseline", 0.95, "higher"),
    ("bulk apply: Fake backend / wireguard-go (daemon's share)", "apply_fake", "apply_userspace", None, "lower"),
    # No cliff between 25 and 100 (the plot shows every size), and steady traffic independent of N.
    ("scale: formation N=100 / N=25", "scale_converge_100", "scale_converge_25", None, "lower"),
    ("steady control datagrams per node: N=100 / N=25", "scale_sent_100", "scale_sent_25", None, "lower"),
]


def stats(samples):
    s = sorted(samples)
    return s[0], statistics.median(s), s[-1]


def fmt(value, unit):
    if unit in ("lost", "writes", "failed", "errors", "nodes"):
        return f"{value:.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def load(path):
    p = pathlib.Path(path)
    if not p.exists():
        return {"rows": []}
    return json.loads(p.read_text())


# The row ids each subset of benches/lab.rs produces (by prefix), for --merge.
SUBSET_ROWS = {"scale": ("scale_", "idle_wakeups_runs_")}


def merge(full, subset, name):
    """The full run with the subset run's rows in place of its rows of the same id (new ids
    follow their scenario's last row). Only a full run may take a subset: the result must still
    hold every row."""
    if full.get("only"):
        sys.exit("bench-report: --lab must be a full run to merge into")
    if not subset.get("only"):
        sys.exit(f"bench-report: {name} is not a subset run")
    fresh = {r["id"]: r for r in subset.get("rows", [])}
    # A subset owns these ids whole: a full-run row it did not produce this time (a "nodes
    # short" row of a formation that now completes) is stale, not kept.
    owned = tuple(p for only in subset["only"] for p in SUBSET_ROWS.get(only, ()))
    rows = [fresh.pop(r["id"], r) for r in full.get("rows", [])
            if r["id"] in fresh or not r["id"].startswith(owned or ("\0",))]
    # Rows the full run lacked go after the last row of their scenario (or at the end).
    for r in fresh.values():
        last = max((i for i, x in enumerate(rows) if x["scenario"] == r["scenario"]), default=len(rows) - 1)
        rows.insert(last + 1, r)
    merged = dict(full)
    merged["rows"] = rows
    merged["merged"] = {"only": subset["only"], "versions": subset.get("versions", {}),
                        "ids": sorted(r["id"] for r in subset.get("rows", []))}
    return merged


def render(lab, apply, command):
    rows = lab.get("rows", []) + apply.get("rows", [])
    by_id = {r["id"]: r for r in rows}
    out = []
    machine = lab.get("machine", {})
    versions = lab.get("versions", {})
    out.append(f"Command: `{command}`\n")
    if machine:
        out.append(
            f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
            f"{machine.get('memory_gib', '?')} GiB, Linux {machine.get('kernel', '?')} "
            "(no WireGuard module: every tunnel is wireguard-go).\n"
        )
    if versions:
        out.append("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".\n")
    merged = lab.get("merged")
    if merged:
        later = merged.get("versions", {})
        out.append(
            f"The rows of the `{','.join(merged['only'])}` scenarios are from a later subset run "
            f"(`WGMESH_BENCH_ONLY={','.join(merged['only'])}`; "
            + ", ".join(f"{k} {v}" for k, v in later.items())
            + "); the other rows are from the full run above.\n"
        )
    samples = {len(r["samples"]) for r in rows}
    out.append(f"Samples per measure: {', '.join(str(s) for s in sorted(samples))} "
               "(idle rows: one sample per node).\n")
    out.append("| scenario | measure | min | median | max | unit | target | result |")
    out.append("|---|---|---:|---:|---:|---|---|---|")
    missed = []
    for r in rows:
        lo, mid, hi = stats(r["samples"])
        target = target_of(r["id"])
        verdict = "report"
        text = "—"
        if target:
            which, op, value, text = target
            got = {"median": mid, "max": hi}[which]
            ok = got <= value if op == "<=" else got >= value
            verdict = "met" if ok else "**missed**"
            if not ok:
                missed.append((r, text, got))
        out.append(
            f"| {r['scenario']} | {r['case']} | {fmt(lo, r['unit'])} | {fmt(mid, r['unit'])} | "
            f"{fmt(hi, r['unit'])} | {r['unit']} | {text} | {verdict} |"
        )
    out.append("")
    out.append("Side by side, same run (ratio of medians):\n")
    out.append("| comparison | wgmesh | other | ratio | target | result |")
    out.append("|---|---:|---:|---:|---|---|")
    for text, num, den, target, better in COMPARISONS:
        if num not in by_id or den not in by_id:
            continue
        a = stats(by_id[num]["samples"])[1]
        b = stats(by_id[den]["samples"])[1]
        unit = by_id[num]["unit"]
        if not b:
            out.append(f"| {text} | {fmt(a, unit)} {unit} | {fmt(b, unit)} {unit} | n/a (other is 0) | — | report |")
            continue
        ratio = a / b
        verdict = "report"
        ttext = "—"
        if target is not None:
            ok = ratio >= target if better == "higher" else ratio <= target
            ttext = f"≥ {target}" if better == "higher" else f"≤ {target}"
            verdict = "met" if ok else "**missed**"
            if not ok:
                missed.append(({"case": text, "unit": ""}, ttext, ratio))
        out.append(
            f"| {text} | {fmt(a, unit)} {unit} | {fmt(b, unit)} {unit} | {ratio:.2f} | {ttext} | {verdict} |"
        )
    out.append("")
    if missed:
        out.append("Missed in this run:\n")
        for r, text, got in missed:
            out.append(f"- {r['case']}: {fmt(got, r['unit'])} {r['unit']}, target {text}")
    else:
        out.append("Every target was met in this run.")
    return "\n".join(out) + "\n", missed


def scale_points(lab):
    """(N, min, median, max) of every scale_converge_N row, by N."""
    points = []
    for r in lab.get("rows", []):
        rest = r["id"][len("scale_converge_"):]
        if r["id"].startswith("scale_converge_") and rest.isdigit():
            points.append((int(rest), *stats(r["samples"])))
    return sorted(points)


def plot_scale(lab, path):
    """Convergence time against N as a PNG, with gnuplot (Debian's gnuplot-nox). Returns
    whether it wrote one: a run without the scale sweep leaves the last plot alone."""
    points = scale_points(lab)
    if not points:
        return False
    if not shutil.which("gnuplot"):
        print(f"bench-report: gnuplot not found, {path} not written (apt-get install gnuplot-nox)",
              file=sys.stderr)
        return False
    # The sweep's own run: a merged subset's, if the scale rows came from one.
    version = (lab.get("merged") or lab).get("versions", {}).get("wgmesh", "?")
    targets = [(n, TARGETS[f"scale_converge_{n}"][2])
               for n in (50, 100) if f"scale_converge_{n}" in TARGETS]
    with tempfile.TemporaryDirectory() as tmp:
        data = pathlib.Path(tmp, "converge.dat")
        data.write_text("".join(f"{n} {mid} {lo} {hi}\n" for n, lo, mid, hi in points))
        target_data = pathlib.Path(tmp, "targets.dat")
        target_data.write_text("".join(
            f"{n} {TARGETS[f'scale_converge_{n}'][2]}\n" for n, _ in targets))
        reps = max(len(r["samples"]) for r in lab["rows"] if r["id"].startswith("scale_converge_"))
        # A formation the bench gave up on is drawn at the give-up time: say so at the point.
        short = {r["id"][len("scale_short_"):]: r["samples"] for r in lab["rows"]
                 if r["id"].startswith("scale_short_")}
        labels = "".join(
            f'set label "gave up: {max(short[str(n)]):.0f} node(s) short" at {n},{hi} '
            'right offset -1,-0.3 tc rgb "red"\n'
            for n, lo, mid, hi in points if str(n) in short and max(short[str(n)]) > 0)
        script = f"""
set terminal pngcairo size 800,500 font ",10"
set output "{path}"
set title "wgmesh LAN mesh formation on this machine (2 cores, wireguard-go): wgmesh {version}"
set xlabel "nodes started at once (N)"
set ylabel "seconds until every node has N-1 handshakes"
set xrange [0:{max(n for n, *_ in points) + 10}]
set yrange [0:*]
set xtics ({", ".join(str(n) for n, *_ in points)})
set grid ytics
set key top left
{labels}plot "{data}" using 1:2:3:4 with yerrorlines lw 2 pt 7 title "median, min-max of {reps} run(s)", \
     "{target_data}" using 1:2 with points pt 6 ps 2 lc rgb "red" title "target (≤ 10 s at 50, ≤ 30 s at 100)"
"""
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lab", default=str(ROOT / "target/bench/lab.json"))
    ap.add_argument("--apply", default=str(ROOT / "target/bench/apply.json"))
    ap.add_argument("--write", help="BENCHMARKS.md to update between the bench markers")
    ap.add_argument("--command", default="sudo ./scripts/bench.sh")
    ap.add_argument("--plot", help="where the scale sweep's plot goes "
                    "(default with --write: docs/bench-scale.png)")
    ap.add_argument("--merge", help="a subset run's lab.json whose rows replace (or join) those "
                    "of --lab, the full run; the report names which rows came from it")
    args = ap.parse_args()
    lab = load(args.lab)
    if args.merge:
        lab = merge(lab, load(args.merge), args.merge)
    text, missed = render(lab, load(args.apply), args.command)
    plot = args.plot or (args.write and str(ROOT / "docs/bench-scale.png"))
    if plot and plot_scale(lab, pathlib.Path(plot).resolve()):
        print(f"bench-report: wrote {plot}", file=sys.stderr)
    if args.write and lab.get("only") and not args.merge:
        # A subset run has only some rows: writing it would drop every other row of the table.
        print(f"bench-report: {args.lab} is a subset run (WGMESH_BENCH_ONLY={','.join(lab['only'])});"
              f" {args.write} left alone, the tables follow", file=sys.stderr)
        args.write = None
    if args.write:
        path = pathlib.Path(args.write)
        doc = path.read_text()
        begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
        if begin not in doc or end not in doc:
            sys.exit(f"{path}: missing the {begin} / {end} markers")
        head, rest = doc.split(begin, 1)
        _, tail = rest.split(end, 1)
        path.write_text(f"{head}{begin}\n{text}{end}{tail}")
    print(text)


if __name__ == "__main__":
    main()
