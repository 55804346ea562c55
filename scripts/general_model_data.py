"""The training folder of the bundled general model: EMPS train (MIT) plus varied simulated images.

    python scripts/general_model_data.py --emps ../shared/data/emps --out work/general_data

Writes ``OUT/images`` and ``OUT/masks`` (EMPS train pairs as symbolic links, never copies, and
``N`` simulated pairs), ``OUT/train.txt`` and ``OUT/val.txt`` (validation: a fixed tenth of the
EMPS train ids, EMPS only, since the model is judged on real micrographs) and ``OUT/data.json``
(what each simulated image is). Only data whose license allows a derived model in an MIT package
go in: the EMPS *train* split and the simulator. Never BAM TiO2, never the EMPS test split.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from sagegan.io import read_split, write_json, write_labels
from sagegan.simulate import SimulationParams, simulate_micrograph

SHAPES = ("disc", "sphere", "cube", "rod")
SHAPE_WEIGHTS = (0.3, 0.3, 0.2, 0.2)


def random_setting(rng: np.random.Generator) -> dict:
    """One simulated micrograph's setting, drawn wide: both modalities (so both polarities),
    every layout, particles from 4 to 250 px, strong illumination gradients, low doses and the
    grain of TEM supports, so that the model meets far more than EMPS shows."""
    diameter = float(np.exp(rng.uniform(math.log(4.0), math.log(250.0))))
    # Large particles need a larger field to hold more than a handful of them.
    size = 512 if diameter < 60 else 1024
    modality = str(rng.choice(["sem", "tem"]))
    params = SimulationParams(
        shape=str(rng.choice(SHAPES, p=SHAPE_WEIGHTS)),
        mean_diameter_px=diameter,
        diameter_sigma=float(rng.uniform(0.03, 0.3)),
        gap_fraction=float(rng.uniform(0.02, 0.6)),
        n_grains=int(rng.integers(1, 6)),
        vacancy_fraction=float(rng.uniform(0.0, 0.15)),
        jitter_fraction=float(rng.uniform(0.0, 0.12)),
        coverage=1.0 if rng.random() < 0.5 else float(rng.uniform(0.3, 1.0)),
        dose=float(np.exp(rng.uniform(math.log(15.0), math.log(500.0)))),
        blur_sigma_px=float(rng.uniform(0.3, 1.0) * max(1.0, diameter / 24.0) ** 0.5),
        scan_line_noise=float(rng.uniform(0.0, 0.06)) if modality == "sem" else 0.0,
        background_gradient=float(rng.uniform(0.0, 0.8)),
        aspect_ratio=float(rng.uniform(2.0, 6.0)),
    )
    return {"size": size, "layout": "mixed", "modality": modality, "params": params}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emps", type=Path, required=True, help="EMPS folder (images/, segmaps/, train.csv).")
    parser.add_argument("--out", type=Path, required=True, help="Data folder to write (must not exist).")
    parser.add_argument("--n-sim", type=int, default=200, help="Simulated images.")
    parser.add_argument("--val-every", type=int, default=10, help="Every k-th EMPS train id validates.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.out.exists():
        raise SystemExit(f"{args.out}: exists; remove it or name another folder")
    stems = sorted(read_split(args.emps / "train.csv"))
    images, masks = args.out / "images", args.out / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    for stem in stems:
        (images / f"{stem}.png").symlink_to((args.emps / "images" / f"{stem}.png").resolve())
        (masks / f"{stem}.png").symlink_to((args.emps / "segmaps" / f"{stem}.png").resolve())
    val = stems[:: args.val_every]
    train = [s for s in stems if s not in set(val)]

    rng = np.random.default_rng(args.seed)
    records = []
    for i in range(args.n_sim):
        setting = random_setting(rng)
        stem = f"sim_{i:04d}"
        sim = simulate_micrograph(setting["size"], setting["layout"], setting["modality"], [args.seed, i],
                                  params=setting["params"])
        iio.imwrite(images / f"{stem}.png", np.clip(np.round(sim.image * 255.0), 0, 255).astype(np.uint8))
        write_labels(masks / f"{stem}.tif", sim.labels)
        train.append(stem)
        records.append({"image": stem, "size": setting["size"], "modality": setting["modality"], **sim.params})
        print(f"{stem}: {setting['modality']} {sim.params.get('layout', '')} d={setting['params'].mean_diameter_px:.1f}px "
              f"n={sim.params.get('n_particles')}", flush=True)
    (args.out / "train.txt").write_text("\n".join(train) + "\n")
    (args.out / "val.txt").write_text("\n".join(val) + "\n")
    write_json(args.out / "data.json", {"emps_train": len(stems), "emps_val": len(val), "n_sim": args.n_sim,
                                        "seed": args.seed, "simulated": records})


if __name__ == "__main__":
    main()
