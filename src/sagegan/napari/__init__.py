"""The optional napari plugin: micrographs in, particles and their order out, corrections back.

``pip install 'sagegan[napari]'`` installs napari; the plugin is registered through the
``napari.manifest`` entry point (``napari.yaml`` beside this file). It contributes

- a reader for every micrograph :func:`sagegan.io.read_micrograph` reads, whose image layer is
  scaled in nm when the pixel size is known (from the file's metadata, else read off the image's
  data bar or scale bar);
- the widgets "Segment particles", "Analyze order" and "Save corrections";
- writers for labels (calibrated TIFF), the particle table (CSV) and the particles as ImageJ
  polygon ROIs (ZIP, for Fiji's ROI Manager);
- sample data from the simulator.

The work is done by the plain functions of :mod:`sagegan.napari._core`, re-exported here, which
need neither napari nor Qt: arrays and tables in, arrays, tables and napari "layer data" tuples
out. Only :mod:`sagegan.napari._widgets` imports napari and magicgui.

>>> from sagegan.napari import save_corrections                         # doctest: +SKIP
>>> save_corrections("my_labels", "grid3", image, labels, nm_per_px=1.2)  # doctest: +SKIP
"""

from ._core import (CorrectionsSaved, OrderAnalysis, analyze_order, color_by_values, labels_layer_data,
                    micrograph_layer_data, particle_table, read_micrograph_layers, sample_micrograph,
                    save_corrections, segment_layer)

__all__ = [
    "CorrectionsSaved",
    "OrderAnalysis",
    "analyze_order",
    "color_by_values",
    "labels_layer_data",
    "micrograph_layer_data",
    "particle_table",
    "read_micrograph_layers",
    "sample_micrograph",
    "save_corrections",
    "segment_layer",
]
