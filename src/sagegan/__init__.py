"""sagegan: few-label nanoparticle segmentation for electron micrographs.

The package root holds only the version and the process settings that must be chosen before
torch is imported; the pipeline lives in the modules (see the README's ARCHITECTURE section).
"""

import os
import sys

__version__ = "0.1.0"


def segment(image, model=None, **options):
    """Segment one micrograph (a path or a float array) with the bundled general model, or ``model``.

    Returns a :class:`sagegan.infer.Segmentation` with ``labels``, per-particle ``scores`` and a
    ``particles`` table (sizes in px and, when the pixel size is known, nm). See
    :func:`sagegan.infer.segment` for the options; imported lazily so that ``import sagegan`` stays light.

    >>> import sagegan
    >>> result = sagegan.segment("my.tif")   # doctest: +SKIP
    """
    from .infer import segment as _segment

    return _segment(image, model, **options)

# glibc malloc settings that keep freed memory mapped: without them, CPU training spends much of
# its time in the kernel re-mapping pages (BENCHMARKS.md). They must be set before the process
# starts, so heavy commands re-execute themselves once with them.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736"}
# Inference keeps its per-tile buffers mapped too, but gives arrays over 128 MiB (whole-image
# arrays of very large micrographs) back to the system when freed, so that they do not pile up.
MALLOC_ENV_INFERENCE = {**MALLOC_ENV, "MALLOC_MMAP_THRESHOLD_": str(128 * 2**20)}


def reexec_with_malloc_settings(args: list[str], env: dict[str, str] = MALLOC_ENV) -> None:
    """Replace this process by ``python <args>`` with the malloc settings ``env``, unless they are
    set already, the platform is not Linux, or ``SAGEGAN_NO_MALLOC_TUNING`` is set."""
    if (sys.platform != "linux" or os.environ.get("SAGEGAN_NO_MALLOC_TUNING")
            or all(k in os.environ for k in env)):
        return
    os.execve(sys.executable, [sys.executable, *args], {**os.environ, **env})
