"""sagegan: few-label nanoparticle segmentation for electron micrographs."""

__version__ = "0.1.0"
