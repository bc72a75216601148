"""Plots the xds-edge figures measured on 2026-11-26 (2 cores).

Inputs are the numbers printed by tests/xdsload/cmd/xds-loadgen; see
docs/bench/README.md.
Run: python3 docs/bench/xds-edge.py (needs matplotlib; Debian: python3-matplotlib, /usr/bin/python3).
"""
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

# Scale harness, separate processes: commit -> received, p99 (ms), one
# point per edit (2026-11-26, quiet machine).
harness = {
    "1k, 1 edge\npolicy edit": [89, 44, 46, 49, 39],
    "10k, 1 edge\nendpoint change": [561, 611, 589, 581, 579, 647, 581, 596, 625, 635, 671, 636, 606, 608, 614],
    "10k, 3 edges\npolicy edit": [657, 573, 670],
}
goals = {"1k, 1 edge\npolicy edit": 150, "10k, 1 edge\nendpoint change": 1000, "10k, 3 edges\npolicy edit": 2000}
# Same run, same proxies (10k, explicit subscriptions): worst edit p99 (ms)
# of the edge and of go-control-plane's stock delta server (LinearCache).
stock_cmp = {"21": (671, 1284), "301": (758, 3566), "1,001": (664, 8087)}
# Live heap per idle proxy at 10k (KB), after a forced collection.
memory = {
    "21 resources": {"xds-edge": 29.6, "stock": 64.5},
    "1,001 names,\nexplicit": {"xds-edge": 47.1, "xds-edge before (3k proxies)": 177.4, "stock": 247.5},
}

fig, (a, b, m) = plt.subplots(1, 3, figsize=(15, 4.2))
names = list(harness)
for i, n in enumerate(names):
    a.scatter([i] * len(harness[n]), harness[n], color="tab:blue", zorder=3, label="p99" if i == 0 else None)
    if n in goals:
        a.hlines(goals[n], i - 0.3, i + 0.3, color="tab:red", label="goal" if i == 0 else None)
a.set_xticks(range(len(names)), names, fontsize=8)
a.set_ylabel("commit to received, p99 (ms)")
a.set_title("xds-edge scale harness (separate processes)")
a.legend(fontsize=8, loc="upper left")

x = range(len(stock_cmp))
ours = [v[0] for v in stock_cmp.values()]
stock = [v[1] for v in stock_cmp.values()]
b.bar([i - 0.2 for i in x], ours, 0.4, label="xds-edge", color="tab:blue")
b.bar([i + 0.2 for i in x], stock, 0.4, label="go-control-plane LinearCache", color="tab:gray")
b.set_xticks(list(x), list(stock_cmp))
b.set_xlabel("resources per proxy")
b.set_yscale("log")
b.set_ylabel("worst edit p99, ms (log)")
b.set_title("10k proxies, one endpoint change, same run")
b.legend(fontsize=8)

colors = {"xds-edge": "tab:blue", "xds-edge before (3k proxies)": "lightsteelblue", "stock": "tab:gray"}
labelled = set()
for i, (case, vals) in enumerate(memory.items()):
    w = 0.8 / len(vals)
    for j, (who, kb) in enumerate(vals.items()):
        m.bar(i - 0.4 + w * (j + 0.5), kb, w, color=colors[who], label=None if who in labelled else who)
        labelled.add(who)
m.axhline(60, color="tab:red", label="goal (xds-edge)")
m.set_xticks(range(len(memory)), list(memory))
m.set_ylabel("live heap per idle proxy, KB")
m.set_title("memory per proxy at 10k")
m.legend(fontsize=8)
fig.tight_layout()
fig.savefig("docs/bench/xds-edge.png", dpi=110)
