"""Screenshots of the napari plugin for the README, made headless along a newcomer's path.

    python scripts/napari_screenshots.py [--out docs/img]

1. Simulates an SEM micrograph, burns a boxed "100 nm" scale bar into it (at 1.5 nm/px) and
   saves it as a PNG without metadata, as an export from a microscope or a paper would be;
   opens it through the plugin's reader, which must read the pixel size off the scale bar.
2. Segments it with the "Segment particles" widget (bundled model, default settings) and
   saves ``napari_segment.png``: the widget says where the pixel size came from, the features
   table lists the sizes in nm, and napari's own 100 nm scale bar lies beside the burnt-in one.
3. Corrects two things as a user would with the Labels tools: erases, with the fill bucket and
   label 0, the particles the model found on the scale bar's label (its "0"s), and splits two
   touching particles segmented as one, by painting one of them with a new label (the script
   picks both from the simulation's truth). Saves them with "Save corrections", writes the ROIs
   with the "ImageJ ROIs (sagegan)" writer, reads those back (roifile) and saves
   ``napari_corrected.png``, zoomed onto the corrections.
4. Runs "Analyze order" and saves ``napari_order.png`` (particles coloured by |psi6|).

Qt runs on its offscreen platform; napari's OpenGL canvas needs an X display, so without one
the script re-runs itself under ``xvfb-run`` (Debian: ``apt-get install xvfb xauth``). Reading
the scale bar needs Tesseract (``apt-get install tesseract-ocr``).
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


def _screenshot(viewer, view=None):
    """The whole window, the canvas shown by ``view(viewer)`` (default: the whole image).
    Offscreen, a grab of the window draws the OpenGL canvas reliably only the first time after
    the window changed size, so the window is resized first."""
    from qtpy.QtWidgets import QApplication

    viewer.screenshot(canvas_only=False, flash=False)
    QApplication.processEvents()
    width, height = viewer.window._qt_window.width(), viewer.window._qt_window.height()
    viewer.window._qt_window.resize(width + 1, height)
    QApplication.processEvents()
    (view or (lambda v: v.reset_view()))(viewer)  # once the canvas has its size
    return viewer.screenshot(canvas_only=False, flash=False)


def _shoot(viewer, path: Path, view=None) -> None:
    size = _save_png(_screenshot(viewer, view), path)
    print(f"{path}: {size / 1000:.0f} kB")
    if size > MAX_BYTES:
        sys.exit(f"{path} is {size / 1000:.0f} kB, over {MAX_BYTES / 1000:.0f} kB")


def _scale_bar(viewer):
    """napari's scale bar overlay (``viewer.canvas.overlays`` since napari 0.9)."""
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None)
    return overlays.scale_bar if overlays is not None and hasattr(overlays, "scale_bar") else viewer.scale_bar


def _false_on_bar(labels, bar_box) -> list[int]:
    """Particles found on the burnt-in scale bar: ids with most of their pixels in its box."""
    import numpy as np

    rows, cols = bar_box
    inside = np.unique(labels[rows, cols])
    return [int(i) for i in inside[inside > 0]
            if (labels[rows, cols] == i).sum() > 0.5 * (labels == i).sum()]


def _merged_pair(labels, truth):
    """A particle that covers two true particles (each at least 30 %) away from the border:
    ``(id, mask of the part to give a new label)``, the largest such, or None."""
    import numpy as np
    from scipy import ndimage as ndi

    sizes = np.bincount(truth.ravel())
    best = None
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None or box[0].start == 0 or box[1].start == 0 or box[0].stop == labels.shape[0] \
                or box[1].stop == labels.shape[1]:
            continue
        mask = labels[box] == i
        ids, counts = np.unique(truth[box][mask], return_counts=True)
        covered = [int(t) for t, c in zip(ids, counts) if t > 0 and c >= 0.3 * sizes[t]]
        if len(covered) == 2 and (best is None or mask.sum() > best[1]):
            best = (i, int(mask.sum()), covered)
    if best is None:
        return None
    i, _, (a, b) = best
    # each pixel of the merged particle goes to the nearer of the two true particles
    dist_a = ndi.distance_transform_edt(truth != a)
    dist_b = ndi.distance_transform_edt(truth != b)
    return i, (labels == i) & (dist_b < dist_a)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args(argv)

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if not os.environ.get("DISPLAY"):
        if not shutil.which("xvfb-run"):
            sys.exit("napari's canvas needs an X display: install xvfb (and xauth) or set DISPLAY")
        os.execvp("xvfb-run", ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable, *sys.argv])

    import imageio.v3 as iio
    import napari
    import numpy as np
    from qtpy.QtCore import Qt
    from roifile import roiread

    from sagegan.io import load_pairs
    from sagegan.simulate import add_scale_bar, simulate_micrograph

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp())
    os.chdir(work)  # the widgets' texts show short paths: corrections/..., as a user's would

    # 1. a PNG export: no metadata, a scale bar burnt in
    sim = simulate_micrograph(384, layout="hex", modality="sem", seed=11, mean_diameter_px=18.0, n_grains=2)
    barred = add_scale_bar(sim, NM_PER_PX, seed=5, style="boxed", font="DejaVuSans.ttf", font_px=22,
                           corner="bottom-right")
    print("burnt in:", barred.params["scale_bar"])
    path = work / "sem_export.png"
    iio.imwrite(path, np.round(barred.image * 255).astype(np.uint8))
    changed = np.argwhere(np.abs(barred.image - sim.image) > 0.02)  # the scale bar's box
    bar_box = (slice(changed[:, 0].min(), changed[:, 0].max() + 1), slice(changed[:, 1].min(), changed[:, 1].max() + 1))

    viewer = napari.Viewer(show=False)
    viewer.window._qt_window.resize(*WINDOW)
    [image] = viewer.open(str(path), plugin="sagegan")
    meta = image.metadata
    print(f"pixel size {meta['nm_per_px']} nm from {meta['calibration']} ({meta['pixel_size_source']})")
    assert meta["calibration"] == "scale bar", meta
    assert abs(meta["nm_per_px"] / NM_PER_PX - 1) < 0.02, meta["nm_per_px"]
    bar = _scale_bar(viewer)          # napari's own bar, in the layer's units (nm)
    bar.visible, bar.box, bar.length, bar.font_size, bar.position = True, True, 100, 12, "bottom_left"

    # 2. segment, with the widget's defaults
    segment_dock, segment = viewer.window.add_plugin_dock_widget("sagegan", "Segment particles")
    segment.image.value = image
    segment.native.setMinimumWidth(400)  # room for the result
    text = segment()
    print(text)
    assert "scale bar" in text, text
    labels = viewer.layers[f"{image.name} particles"]
    labels.opacity = 0.6
    viewer.layers.selection.active = labels
    # the particle table, sizes in nm first (Window > Features table widget)
    viewer.window._qt_window.resize(WINDOW[0], WINDOW[1] + 160)
    table_dock, _ = viewer.window.add_plugin_dock_widget("napari", "Features table widget")
    viewer.window._qt_window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, table_dock)  # dragged down
    table_dock.setMinimumHeight(200)
    _shoot(viewer, out / "napari_segment.png")
    viewer.window.remove_dock_widget(table_dock)
    viewer.window._qt_window.resize(*WINDOW)

    # 3. two corrections, as with the fill bucket (label 0) and the brush (a new label)
    before = int(np.unique(labels.data[labels.data > 0]).size)
    false = _false_on_bar(labels.data, bar_box)
    assert false, "the model found no particle on the scale bar's label: nothing to erase"
    for i in false:
        y, x = np.argwhere(labels.data == i)[0]
        labels.fill((y, x), 0)                  # the fill bucket, with label 0: one click
    merged = _merged_pair(labels.data, barred.labels)
    assert merged is not None, "no two particles segmented as one: nothing to split"
    merged_id, part = merged
    labels.selected_label = int(labels.data.max()) + 1   # "new label" (M), then paint one of the two
    labels.data_setitem(tuple(np.nonzero(part)), labels.selected_label)
    labels.refresh()
    after = int(np.unique(labels.data[labels.data > 0]).size)
    print(f"erased {false} on the scale bar's label, split {merged_id} (new label {labels.selected_label}): "
          f"{before} -> {after} particles")
    assert after == before - len(false) + 1

    viewer.window.remove_dock_widget(segment_dock)
    fix_dock, fix = viewer.window.add_plugin_dock_widget("sagegan", "Save corrections")
    fix.native.setMinimumWidth(400)
    fix.image.value, fix.particles.value = image, labels
    text = fix()
    print(text)
    assert text.startswith(f"saved {after} particles"), text
    [sample] = load_pairs(work / "corrections" / "images", work / "corrections" / "masks")
    assert abs(sample.nm_per_px / NM_PER_PX - 1) < 0.02
    rois_path = work / f"{image.name}_rois.zip"
    [written] = labels.save(str(rois_path))   # File > Save Selected Layers..., "ImageJ ROIs (sagegan)"
    rois = roiread(written)
    print(f"{written}: {len(rois)} ROIs")
    assert len(rois) == after and {r.name for r in rois} == {str(i) for i in np.unique(labels.data) if i}
    # zoom onto the corrections: the split pair and the scale bar's label
    ys, xs = np.nonzero((labels.data == merged_id) | (labels.data == labels.selected_label))
    height, width = labels.data.shape
    y0, x0 = min(ys.min(), bar_box[0].start) - 30, min(xs.min(), bar_box[1].start) - 30

    def zoom(viewer) -> None:
        """The image's bottom-right corner in the canvas's, zoomed to show the corrections."""
        nm = image.scale[-1]
        camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari >= 0.9, older
        canvas_h, canvas_w = viewer.canvas.size if hasattr(viewer, "canvas") else viewer._canvas_size
        camera.zoom = min(canvas_h / ((height - y0) * nm), canvas_w / ((width - x0) * nm))
        half_h, half_w = canvas_h / 2 / camera.zoom, canvas_w / 2 / camera.zoom
        camera.center = ((height - 0.5) * nm - half_h, (width - 0.5) * nm - half_w)

    bar.position = "top_left"  # clear of the image's own bar
    _shoot(viewer, out / "napari_corrected.png", zoom)
    bar.position = "bottom_left"

    # 4. order
    viewer.window.remove_dock_widget(fix_dock)
    _, order = viewer.window.add_plugin_dock_widget("sagegan", "Analyze order")
    order.native.setMinimumWidth(500)  # room for the summary
    order.particles.value = labels
    print(order())
    _shoot(viewer, out / "napari_order.png")
    viewer.close()
    os.chdir(out)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
