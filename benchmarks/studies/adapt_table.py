"""The BENCHMARKS.md table of adapt_bam.sh, from the JSON files it writes (issue 19).

    .venv/bin/python benchmarks/studies/adapt_table.py [WORK]      # WORK defaults to work/adapt

One row per run name without its seed (``pseudo-label-s0``, ``pseudo-label-s1`` -> ``pseudo-label``):
test F1@0.5 per seed and their mean, then Dice, PQ and the diameter errors averaged over seeds,
and the validation F1.
"""

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def main() -> None:
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "work/adapt")
    runs: dict[str, list[tuple[dict, dict | None]]] = defaultdict(list)
    for test in sorted(work.glob("*.test.json")):
        name = test.name.removesuffix(".test.json")
        val = test.with_name(f"{name}.val.json")
        runs[re.sub(r"-s\d+$", "", name)].append((json.loads(test.read_text()),
                                                  json.loads(val.read_text()) if val.exists() else None))
    print("| run | test F1@0.5 per seed | mean test F1@0.5 | Dice | PQ | mean ECD error | matched error "
          "| D10 / D50 / D90 errors | val F1 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, pairs in runs.items():
        tests = [t for t, _ in pairs]

        def mean(*keys: str) -> float:
            values = []
            for t in tests:
                v = t
                for k in keys:
                    v = v.get(k, {}) if isinstance(v, dict) else {}
                if isinstance(v, (int, float)):
                    values.append(v)
            return float(np.mean(values)) if values else float("nan")

        f1 = " / ".join(f"{t['all']['f1_50']:.3f}" for t in tests)
        vals = [v["all"]["f1_50"] for _, v in pairs if v is not None]
        val = f"{np.mean(vals):.3f}" if vals else "-"
        deciles = " / ".join(f"{mean('sizes_nm', f'd{q}_error'):+.0f}" for q in (10, 50, 90))
        print(f"| {name} | {f1} | {mean('all', 'f1_50'):.3f} | {mean('all', 'dice'):.3f} | {mean('all', 'pq'):.3f} "
              f"| {mean('sizes_nm', 'mean_ecd_error'):+.0f} nm | {mean('sizes_nm', 'matched_mean_error'):+.0f} nm "
              f"| {deciles} nm | {val} |")


if __name__ == "__main__":
    main()
