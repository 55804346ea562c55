"""The ``sagegan`` command line: argument parsing only, every command calls the Python API.

Heavy modules (torch, scikit-image, matplotlib) are imported inside the commands, so that
``sagegan --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from . import __version__
from .io import InputError

app = typer.Typer(
    name="sagegan",
    help="Few-label nanoparticle segmentation for electron micrographs: Attention U-Net, "
         "SAGE-GAN synthesis, particle sizes and spatial order.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sagegan {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Few-label nanoparticle segmentation for electron micrographs."""


# Options shared by the commands that read data, spelled once.
DATA = typer.Option(None, "--data", help="Data folder with images/ and masks/.")
IMAGES = typer.Option(None, "--images", help="Folder of images (instead of --data).")
MASKS = typer.Option(None, "--masks", help="Folder of masks (instead of --data).")
SPLIT = typer.Option(None, "--split", help="Text/CSV file whose first column lists the stems to use.")
CROP = typer.Option(0, "--crop-bottom", min=0, help="Rows to drop at the bottom (data bar).")
NM = typer.Option(None, "--nm-per-px", help="Pixel size in nm; overrides the files' value.")
SEED = typer.Option(0, "--seed", help="Random seed.")


@app.command()
def simulate(
    out: Path = typer.Option(..., "--out", help="Output data folder."),
    n: int = typer.Option(8, "--n", min=1, help="Number of images."),
    size: int = typer.Option(512, "--size", min=16, help="Image side in px."),
    layout: str = typer.Option("hex", "--layout", help="hex | square | random | sparse | mixed"),
    modality: str = typer.Option("sem", "--modality", help="sem | tem"),
    seed: int = SEED,
    nm_per_px: Optional[float] = typer.Option(None, "--nm-per-px",
                                              help="Nominal pixel size recorded with the set."),
) -> None:
    """Simulate micrographs of nanoparticle arrays with exact instance masks."""
    from .simulate import simulate_dataset

    folder = simulate_dataset(out, n=n, size=size, layout=layout, modality=modality, seed=seed,
                              nm_per_px=nm_per_px)
    typer.echo(f"wrote {n} image/mask pairs to {folder} (images/, masks/, truth.csv, simulation.json)")


@app.command("check-data")
def check_data(
    data: Optional[Path] = DATA, images: Optional[Path] = IMAGES, masks: Optional[Path] = MASKS,
    split: Optional[Path] = SPLIT, crop_bottom: int = CROP, nm_per_px: Optional[float] = NM,
) -> None:
    """Read a data folder as training would, and summarise it (or name the first problem)."""
    from .io import load_pairs, resolve_data_dirs

    images_dir, masks_dir = resolve_data_dirs(data, images, masks)
    samples = load_pairs(images_dir, masks_dir, split, crop_bottom=crop_bottom, nm_per_px=nm_per_px,
                         progress=True)
    n_particles = sum(int(len(set(s.labels[s.labels > 0].tolist()))) for s in samples)
    sides = sorted({s.image.shape for s in samples})
    calibrated = sum(s.nm_per_px is not None for s in samples)
    typer.echo(f"{len(samples)} image/mask pairs, {n_particles} particles, sizes "
               f"{sides[0][1]}x{sides[0][0]} .. {sides[-1][1]}x{sides[-1][0]} px, "
               f"{calibrated} with a pixel size")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_output"), "--out", help="Output folder."),
    data: Optional[Path] = typer.Option(None, "--data", help="Run on your own data folder instead."),
    quick: bool = typer.Option(False, "--quick", help="Tiny budgets (for tests)."),
    seed: int = SEED,
) -> None:
    """The main job: simulate data, train, synthesise, segment, analyse, report."""
    from .demo import run_demo

    run_demo(out, data=data, quick=quick, seed=seed)


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point: one clear line and exit status 2 for bad input, never a traceback."""
    try:
        app(args=argv, prog_name="sagegan", standalone_mode=True)
    except InputError as exc:
        typer.echo(f"sagegan: error: {exc}", err=True)
        sys.exit(2)
    except ValueError as exc:  # argument checks of the Python API
        if os.environ.get("SAGEGAN_DEBUG"):
            raise
        typer.echo(f"sagegan: error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
