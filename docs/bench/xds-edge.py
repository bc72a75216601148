"""Plots the xds-edge figures measured on 2026-11-25 (2 shared cores).

Inputs are the numbers printed by services/xds-edge/cmd/xds-loadgen and by
`go test -bench EndpointChange ./internal/xds/`; see docs/bench/README.md.
Run: python3 docs/bench/xds-edge.py (needs matplotlib).
"""
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

# Scale harness, separate processes: commit -> received, p99 (ms). Where
# only a range was recorded, its two ends are plotted; where each edit was
# recorded, every edit is.
harness = {
    "1k, 1 edge\npolicy edit": [60, 106],          # range over runs
    "1k, 3 edges\npolicy edit": [109, 70, 72],     # per edit
    "10k, 1 edge\nendpoint change": [722, 884],    # range over runs
    "10k, 3 edges\npolicy edit": [1272, 878, 913],  # per edit
}
goals = {"1k, 1 edge\npolicy edit": 150, "10k, 1 edge\nendpoint change": 1000, "10k, 3 edges\npolicy edit": 2000}
# In-process: one endpoint change pushed to every stream (ms, range of runs).
inproc = {"1k streams": ((9.5, 10.3), (32, 34)), "10k streams": ((106, 192), (435, 606))}

fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
names = list(harness)
for i, n in enumerate(names):
    a.scatter([i] * len(harness[n]), harness[n], color="tab:blue", zorder=3, label="p99" if i == 0 else None)
    if n in goals:
        a.hlines(goals[n], i - 0.3, i + 0.3, color="tab:red", label="goal" if i == 0 else None)
a.set_xticks(range(len(names)), names, fontsize=8)
a.set_ylabel("commit to received, p99 (ms)")
a.set_title("xds-edge scale harness (separate processes)")
a.legend(fontsize=8, loc="upper left")

x = range(len(inproc))
ours = [sum(v[0]) / 2 for v in inproc.values()]
stock = [sum(v[1]) / 2 for v in inproc.values()]
b.bar([i - 0.2 for i in x], ours, 0.4, label="xds-edge", color="tab:blue")
b.bar([i + 0.2 for i in x], stock, 0.4, label="go-control-plane LinearCache", color="tab:gray")
b.set_xticks(list(x), list(inproc))
b.set_ylabel("one endpoint change, ms (mean of range)")
b.set_title("in-process, same benchmark run")
b.legend(fontsize=8)
fig.tight_layout()
fig.savefig("docs/bench/xds-edge.png", dpi=110)
