"""``sagegan demo``: the main job on the embedded simulator data (interim: simulate only)."""

from __future__ import annotations

from pathlib import Path


def run_demo(out: str | Path, data: str | Path | None = None, quick: bool = False, seed: int = 0) -> Path:
    """Simulate a small ordered-nanoparticle data set and say what was made."""
    from .simulate import simulate_dataset

    out = Path(out)
    n = 4 if quick else 12
    folder = simulate_dataset(out / "simulated", n=n, size=256 if quick else 512, layout="mixed", seed=seed)
    print(f"simulated {n} labelled micrographs in {folder}")
    return folder
