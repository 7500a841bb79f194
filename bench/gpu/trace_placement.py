#!/usr/bin/env python3
"""Where a traced launch's CTAs ran, from hisa_gpu_bench's HISA_TRACE_CSV
(bench/gpu/sweep.sh writes one per setting): for each run of one label and
launch, how many SMs held 1, 2, 3, ... of its CTAs, the median tile loop
(ready -> loop end) of the CTAs by how many shared their SM, the loop ends
(median, max), how far apart the loop ends of one cluster's CTAs lie
(consecutive CTAs, --cluster of them), and the last CTA's end.

  python3 trace_placement.py old.csv new.csv --label "decode64 HISA L=65536"

A CSV row: label, launch, CTA, SM, then the trace points (select_layout.h
TracePoint) in us from the first CTA's start, empty when not reached. Runs
are told apart by CTA 0 starting again.
"""
import argparse
import collections
import csv
import statistics

READY, LOOP_END, TAIL_END = 2, 3, 8  # TracePoint indices


def runs_of(path, label, launch):
    runs, cur = [], []
    with open(path) as f:
        for row in csv.reader(f):
            if row[0] != label or row[1] != str(launch):
                continue
            if row[2] == "0" and cur:
                runs.append(cur)
                cur = []
            cur.append(row)
    if cur:
        runs.append(cur)
    return runs


def point(row, p):
    v = row[4 + p]
    return float(v) if v else None


def describe(run, cluster):
    per_sm = collections.Counter(r[3] for r in run)
    loops = collections.defaultdict(list)
    for r in run:
        if point(r, READY) is not None and point(r, LOOP_END) is not None:
            loops[per_sm[r[3]]].append(point(r, LOOP_END) - point(r, READY))
    ends = [point(r, LOOP_END) for r in run if point(r, LOOP_END) is not None]
    spreads = []
    for c in range(0, len(run) - cluster + 1, cluster):
        e = [point(r, LOOP_END) for r in run[c:c + cluster]]
        if all(x is not None for x in e):
            spreads.append(max(e) - min(e))
    tails = [point(r, TAIL_END) for r in run if point(r, TAIL_END) is not None]
    out = [f"{len(per_sm)} SMs",
           "CTAs per SM " + " ".join(f"{k}:{v}" for k, v in
                                      sorted(collections.Counter(
                                          per_sm.values()).items())),
           "loop by CTAs per SM " + " ".join(
               f"{k}:{statistics.median(v):.2f}"
               for k, v in sorted(loops.items()))]
    if ends:
        out.append(f"loop end med {statistics.median(ends):.2f} "
                   f"max {max(ends):.2f}")
    if spreads:
        out.append(f"cluster spread med {statistics.median(spreads):.2f} "
                   f"max {max(spreads):.2f}")
    if tails:
        out.append(f"last end {max(tails):.2f}")
    return ", ".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv", nargs="+")
    ap.add_argument("--label", default="decode64 HISA L=65536")
    ap.add_argument("--launch", type=int, default=1, help="1: token stage")
    ap.add_argument("--cluster", type=int, default=4)
    args = ap.parse_args()
    for path in args.csv:
        for i, run in enumerate(runs_of(path, args.label, args.launch)):
            print(f"{path} run {i + 1}: {describe(run, args.cluster)}")


if __name__ == "__main__":
    main()
