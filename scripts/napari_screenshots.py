"""Screenshots of the napari plugin for the README, made headless.

    python scripts/napari_screenshots.py [--out docs/img]

Simulates an SEM micrograph, saves it as a TIFF calibrated at a nominal 1.5 nm/px, opens it in
a napari viewer through the plugin's reader, segments it with the "Segment particles" widget
(bundled model) and saves ``napari_segment.png``; then runs "Analyze order" and saves
``napari_order.png`` (particles coloured by |psi6|). Qt runs on its offscreen platform; napari's
OpenGL canvas needs an X display, so without one the script re-runs itself under ``xvfb-run``
(Debian: ``apt-get install xvfb xauth``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

NM_PER_PX = 1.5
WINDOW = (1360, 780)
MAX_BYTES = 300_000


def _save_png(shot, path: Path) -> int:
    """Save an RGBA screenshot as a palette PNG (a few hundred kB at most); returns its size."""
    from PIL import Image

    picture = Image.fromarray(shot[..., :3])
    for colors in (256, 128, 64):
        picture.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        if path.stat().st_size <= MAX_BYTES:
            break
    return path.stat().st_size


def _screenshot(viewer):
    """The whole window. Offscreen, a grab of the window draws the OpenGL canvas reliably only
    the first time after the window changed size, so the window is resized first."""
    from qtpy.QtWidgets import QApplication

    viewer.screenshot(canvas_only=False, flash=False)
    QApplication.processEvents()
    viewer.reset_view()
    width, height = viewer.window._qt_window.width(), viewer.window._qt_window.height()
    viewer.window._qt_window.resize(width + 1, height)
    QApplication.processEvents()
    return viewer.screenshot(canvas_only=False, flash=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args(argv)

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if not os.environ.get("DISPLAY"):
        if not shutil.which("xvfb-run"):
            sys.exit("napari's canvas needs an X display: install xvfb (and xauth) or set DISPLAY")
        os.execvp("xvfb-run", ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable, *sys.argv])

    import napari
    import tifffile

    from sagegan.simulate import simulate_micrograph

    args.out.mkdir(parents=True, exist_ok=True)
    sim = simulate_micrograph(384, layout="hex", modality="sem", seed=11, mean_diameter_px=18.0, n_grains=2)
    folder = Path(tempfile.mkdtemp())
    path = folder / "simulated_sem.tif"
    tifffile.imwrite(path, (sim.image * 65535).astype("uint16"), imagej=True,
                     resolution=(1 / NM_PER_PX, 1 / NM_PER_PX), metadata={"unit": "nm"})

    viewer = napari.Viewer(show=False)
    viewer.window._qt_window.resize(*WINDOW)
    [image] = viewer.open(str(path), plugin="sagegan")

    segment_dock, segment = viewer.window.add_plugin_dock_widget("sagegan", "Segment particles")
    segment.image.value = image
    segment.size_hint.value = 18.0
    print(segment())
    labels = viewer.layers[f"{image.name} particles"]
    labels.opacity = 0.6
    size = _save_png(_screenshot(viewer), args.out / "napari_segment.png")
    print(f"{args.out / 'napari_segment.png'}: {size / 1000:.0f} kB")

    viewer.window.remove_dock_widget(segment_dock)
    _, order = viewer.window.add_plugin_dock_widget("sagegan", "Analyze order")
    order.native.setMinimumWidth(500)  # room for the summary
    order.particles.value = labels
    print(order())
    size = _save_png(_screenshot(viewer), args.out / "napari_order.png")
    print(f"{args.out / 'napari_order.png'}: {size / 1000:.0f} kB")
    viewer.close()
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
