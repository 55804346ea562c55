"""`sagegan segment` end to end, as a user waits for it, and where the time goes (issue 20).

    .venv/bin/python benchmarks/studies/segment_end_to_end.py ../shared/data/emps/images \
        --split ../shared/data/emps/test.csv --truth ../shared/data/emps/segmaps --repeats 3
    .venv/bin/python benchmarks/studies/segment_end_to_end.py work/big/big8192.png --repeats 1

Each repeat is a fresh `sagegan segment INPUT... --out TMP` process with the default outputs,
`--scale auto` and no size hint (extra options after `--`), timed from its start to its exit.
Prints the median wall clock, MPix/s, the peak RSS, and the seconds per stage summed over the
images from the `seconds` that segment records per image in segment_config.json (read, zoom
search, network, instances, scores, write, measure); "startup and batch" is the rest (imports,
model load, particles.csv). With `--truth`, the outputs of the first repeat are scored (mean
object F1@0.5 and Dice, `sagegan.evaluate`). `--bpartis` adds imagedataextractor's single pass
over the same images, run the same way, when it is installed (a benchmark-only peer).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
STAGES = ("read", "zoom_search", "network", "instances", "scores", "write", "measure")


def run_timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({proc.returncode}): {proc.stderr.read()[-2000:]}")
    return wall, usage.ru_maxrss / 1024 ** 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("--split")
    parser.add_argument("--truth", type=Path, help="ground-truth masks: score the first repeat")
    parser.add_argument("--model", default="general")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bpartis", action="store_true", help="also time imagedataextractor (if installed)")
    parser.add_argument("--json", type=Path)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, extra = parser.parse_args(argv[:cut]), argv[cut + 1:]  # after "--": options for sagegan segment
    sagegan = str(Path(sys.executable).with_name("sagegan"))
    work = Path(tempfile.mkdtemp(prefix="segment_e2e_"))
    result: dict = {"inputs": args.inputs, "split": args.split, "model": args.model, "options": extra,
                    "repeats": []}
    try:
        for i in range(args.repeats):
            out = work / f"run{i}"
            command = [sagegan, "segment", *args.inputs, "--out", str(out), "--model", args.model, *extra]
            if args.split:
                command += ["--split", args.split]
            wall, rss = run_timed(command)
            config = json.loads((out / "segment_config.json").read_text())
            stages = {s: sum(im["seconds"][s] for im in config["images"]) for s in STAGES}
            mpix = sum(np.prod(im["shape"]) for im in config["images"]) / 1e6
            result["repeats"].append({"wall_s": wall, "peak_rss_gb": rss, "stages_s": stages,
                                      "n_images": len(config["images"]), "mpix": mpix})
            print(f"repeat {i}: {wall:.1f} s, {mpix / wall:.3f} MPix/s, {rss:.2f} GB", flush=True)
            if i == 0 and args.truth:
                result["quality"] = score(out, args.truth, args.split)
            if i > 0:
                shutil.rmtree(out)
        if args.bpartis:
            result["bpartis"] = bpartis(args.inputs, args.split, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))


def score(out: Path, truth: Path, split: str | None) -> dict:
    from sagegan.evaluate import evaluate_folders, headline

    _, summary = evaluate_folders(out, truth, split, crop_bottom="auto")  # the data-bar rows segment dropped
    h = headline(summary)
    return {"f1_50": h["mean_f1_50"], "dice": h["mean_dice"], "pq": h["mean_pq"], "n_images": h["n_images"]}


def bpartis(inputs: list[str], split: str | None, repeats: int) -> dict | None:
    """imagedataextractor's single pass over the same images, timed in a fresh process each repeat."""
    import importlib.util

    if importlib.util.find_spec("imagedataextractor") is None:  # its __init__ needs OpenCV: not imported here
        print("imagedataextractor is not installed: no BPartIS row (pip install --no-deps imagedataextractor==2.0.4)")
        return None
    from sagegan.io import expand_inputs, read_split

    files = expand_inputs(inputs)
    if split:
        wanted = set(read_split(split))
        files = [f for f in files if f.stem in wanted]
    listing = Path(tempfile.mkstemp(suffix=".txt")[1])
    listing.write_text("\n".join(map(str, files)))
    walls = [run_timed([sys.executable, str(Path(__file__).with_name("bpartis_pass.py")), str(listing)])
             for _ in range(repeats)]
    listing.unlink()
    from PIL import Image

    mpix = sum(np.prod(Image.open(f).size) for f in files) / 1e6
    wall = float(np.median([w for w, _ in walls]))
    return {"wall_s": wall, "mpix": mpix, "mpix_per_s": mpix / wall, "peak_rss_gb": max(r for _, r in walls)}


def print_table(result: dict) -> None:
    reps = result["repeats"]
    median = reps[int(np.argsort([r["wall_s"] for r in reps])[len(reps) // 2])]
    wall, mpix = median["wall_s"], median["mpix"]
    print(f"\n{median['n_images']} images, {mpix:.1f} MPix; median of {len(reps)} fresh processes: "
          f"{wall:.1f} s, {mpix / wall:.3f} MPix/s, peak RSS {max(r['peak_rss_gb'] for r in reps):.2f} GB")
    print("| stage | seconds | share |\n| --- | --- | --- |")
    for stage, s in median["stages_s"].items():
        print(f"| {stage} | {s:.1f} | {s / wall:.0%} |")
    rest = wall - sum(median["stages_s"].values())
    if rest >= 0:
        print(f"| startup and batch (imports, model, particles.csv) | {rest:.1f} | {rest / wall:.0%} |")
    else:  # with --workers the images' stages overlap in time: their sum exceeds the wall clock
        print(f"| (stages summed over parallel workers exceed the wall clock by {-rest:.1f} s) | | |")
    if "quality" in result:
        q = result["quality"]
        print(f"quality of repeat 0: F1@0.5 {q['f1_50']:.4f}, Dice {q['dice']:.4f}, PQ {q['pq']:.4f}")
    if result.get("bpartis"):
        b = result["bpartis"]
        print(f"BPartIS single pass: {b['wall_s']:.1f} s, {b['mpix_per_s']:.3f} MPix/s, {b['peak_rss_gb']:.2f} GB")


if __name__ == "__main__":
    main()
