"""Choose the thresholds of ``sagegan.order.order_verdict`` on simulated lattices and EMPS train.

    nice -n 15 python benchmarks/studies/order_verdict.py [--emps ../shared/data/emps] [--test]

The verdict thresholds a local bond order ``q`` (``<|psi6|>`` or ``<|psi4|>``, whichever
lattice fits better). This study prints

1. ``q`` of simulated hex and square lattices with growing positional jitter and of random
   layouts (dense jammed-like packing, sparse), with the verdict of the current thresholds;
2. how often small random layouts reach the "ordered" threshold, by the number of particles
   with a complete neighbour shell (for the minimum particle count);
3. on the EMPS training images of ``order_labels.csv`` (truth instance masks), the agreement of
   candidate thresholds with the visual labels, and of the library's thresholds.

``--test`` also prints the agreement of the library's thresholds on the EMPS test images; use it
once, after the thresholds are fixed. About a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from sagegan.io import read_mask, read_split
from sagegan.order import (ORDERED_MIN_PSI, PARTIAL_MIN_PSI, VERDICT_MIN_PARTICLES, order_verdict,
                           summarize_order)
from sagegan.particles import measure
from sagegan.simulate import simulate_micrograph

JITTERS = (0.0, 0.03, 0.06, 0.09, 0.12, 0.15, 0.2)
SEEDS = range(3)


def _order_of(labels: np.ndarray) -> dict:
    p = measure(labels)
    return summarize_order(p[["centroid_x", "centroid_y"]].to_numpy(float), labels.shape)


def _q(s: dict) -> float:
    """Local order of the better-fitting lattice (what the verdict thresholds)."""
    return max(s["psi6_local_mean"], s["psi4_local_mean"])


def simulated() -> pd.DataFrame:
    rows = []
    for layout, shape in (("hex", "disc"), ("square", "cube")):
        for jitter in JITTERS:
            for seed in SEEDS:
                sim = simulate_micrograph(256, layout, seed=seed, render=False, shape=shape,
                                          mean_diameter_px=16, jitter_fraction=jitter)
                rows.append({"layout": layout, "jitter": jitter, **_order_of(sim.labels)})
    for layout in ("random", "sparse"):
        for seed in range(12):
            sim = simulate_micrograph(256, layout, seed=seed, render=False, mean_diameter_px=16)
            rows.append({"layout": layout, "jitter": np.nan, **_order_of(sim.labels)})
    return pd.DataFrame(rows)


def small_random() -> pd.DataFrame:
    rows = []
    for size in (56, 64, 72, 80, 96):
        for seed in range(16):
            sim = simulate_micrograph(size, "random", seed=100 + seed, render=False, mean_diameter_px=16)
            rows.append(_order_of(sim.labels))
    return pd.DataFrame(rows)


def emps(root: Path, split: str) -> pd.DataFrame:
    labels = pd.read_csv(root / "order_labels.csv")
    labels["stem"] = labels["file"].str.replace(r"\.png$", "", regex=True)
    stems = set(read_split(root / f"{split}.csv"))
    rows = []
    for stem, visual in zip(labels["stem"], labels["order_label_visual"]):
        if stem in stems:
            rows.append({"stem": stem, "visual": visual,
                         **_order_of(read_mask(root / "segmaps" / f"{stem}.png", kind="labels"))})
    return pd.DataFrame(rows)


def _verdicts(df: pd.DataFrame, **thresholds) -> pd.Series:
    return pd.Series([order_verdict(r, **thresholds) for r in df.to_dict("records")], index=df.index)


def agreement(df: pd.DataFrame, **thresholds) -> dict:
    """Ordered-vs-not agreement with the visual labels (no verdict counts as not ordered)."""
    verdict = _verdicts(df, **thresholds).fillna("none")
    called = verdict.str.startswith("ordered")
    truth = df["visual"] == "ordered"
    three = verdict.map({"ordered hexagonal": "ordered", "ordered square": "ordered",
                         "partially ordered": "partially_ordered"}).fillna("not_ordered")
    tpr, tnr = (called & truth).sum() / truth.sum(), (~called & ~truth).sum() / (~truth).sum()
    return {"n": len(df), "accuracy": float((called == truth).mean()), "sensitivity": float(tpr),
            "specificity": float(tnr), "balanced": float((tpr + tnr) / 2),
            "three_class": float((three == df["visual"]).mean())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emps", type=Path, default=Path("../shared/data/emps"))
    parser.add_argument("--test", action="store_true", help="also score the EMPS test images (once)")
    args = parser.parse_args(argv)
    pd.set_option("display.width", 200)
    library = {"ordered_min": ORDERED_MIN_PSI, "partial_min": PARTIAL_MIN_PSI,
               "min_particles": VERDICT_MIN_PARTICLES}
    print(f"library thresholds: {library}\n")

    sim = simulated()
    sim["q"] = sim.apply(_q, axis=1)
    sim["verdict"] = _verdicts(sim).fillna("none")
    table = sim.groupby(["layout", "jitter"], dropna=False).agg(
        n_valid=("n_valid", "mean"), psi6_local=("psi6_local_mean", "mean"),
        psi4_local=("psi4_local_mean", "mean"), q_min=("q", "min"), q_max=("q", "max"),
        verdicts=("verdict", lambda v: ", ".join(f"{k} {c}" for k, c in v.value_counts().items())))
    print("1. simulated 256 px layouts, mean diameter 16 px (3 seeds per jitter, 12 per random layout)")
    print(table.round(3).to_string(), "\n")

    small = small_random()
    small["q"] = small.apply(_q, axis=1)
    bins = pd.cut(small["n_valid"], [-1, 0, 2, 4, 7, 12, 1000], labels=["0", "1-2", "3-4", "5-7", "8-12", ">12"])
    reach = small.groupby(bins, observed=True).agg(
        images=("q", "size"), q_mean=("q", "mean"), q_max=("q", "max"),
        ordered=("q", lambda q: float((q >= ORDERED_MIN_PSI).mean())),
        partial_or_more=("q", lambda q: float((q >= PARTIAL_MIN_PSI).mean())))
    print("2. small dense random layouts (56-96 px, 16 seeds each): share reaching the thresholds, by particles "
          "with a complete neighbour shell")
    print(reach.round(3).to_string(), "\n")

    train = emps(args.emps, "train")
    grid = []
    for ordered_min in np.round(np.arange(0.55, 0.901, 0.025), 3):
        for min_particles in (1, 3, 5, 8):
            a = agreement(train, ordered_min=ordered_min, partial_min=min(PARTIAL_MIN_PSI, ordered_min),
                          min_particles=min_particles)
            grid.append({"ordered_min": ordered_min, "min_particles": min_particles, **a})
    grid = pd.DataFrame(grid)
    print(f"3. EMPS train, {len(train)} labelled images ({(train['visual'] == 'ordered').sum()} ordered): "
          "ordered-vs-not agreement by threshold (partial_min fixed); best 12 by balanced accuracy")
    print(grid.sort_values(["balanced", "accuracy"], ascending=False).head(12).round(3).to_string(index=False))
    partial = pd.DataFrame([{"partial_min": p, **agreement(train, ordered_min=ORDERED_MIN_PSI, partial_min=p)}
                            for p in np.round(np.arange(0.5, ORDERED_MIN_PSI + 1e-9, 0.02), 3)])
    print("\n   three-class agreement by partial_min (library ordered_min and min_particles)")
    print(partial[["partial_min", "three_class", "accuracy"]].round(3).to_string(index=False))
    print("\n   library thresholds on EMPS train:", {k: round(v, 3) for k, v in agreement(train).items()})
    train["verdict"] = _verdicts(train).fillna("none")
    print(pd.crosstab(train["visual"], train["verdict"]).to_string())

    if args.test:
        test = emps(args.emps, "test")
        print("\n4. EMPS test, library thresholds:", {k: round(v, 3) for k, v in agreement(test).items()})
        test["verdict"] = _verdicts(test).fillna("none")
        print(pd.crosstab(test["visual"], test["verdict"]).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
