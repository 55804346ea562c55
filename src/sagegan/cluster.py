"""Images on a Dask cluster: ``sagegan segment --workers N`` or ``--scheduler ADDRESS``.

One image is one task (:func:`sagegan.infer.segment_to_files`: read, segment, write the outputs,
measure; for ``analyze``, :func:`sagegan.report.analyze_one`), so a worker needs the input files,
the output folder and the model folder on storage it shares with the client; it loads the model
once and keeps it. The client keeps the manifest, the particles table and the failure policy
(:class:`sagegan.io.Batch`), exactly as in a serial run. ``workers`` starts a
:class:`distributed.LocalCluster` of that many processes, one task at a time each, with the
machine's cores shared out among their torch threads; ``scheduler`` connects to a cluster started
with Dask's own tools (``dask scheduler`` / ``dask worker``, dask-jobqueue on SLURM,
dask-kubernetes), whose workers use all the cores they are given.

Dask (``pip install 'sagegan[dask]'``) is imported only here.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Sequence


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise ValueError("--workers and --scheduler need Dask: pip install 'sagegan[dask]'") from exc
    return distributed


def check_cluster_options(workers: int | None, scheduler: str | None):
    """Refuse impossible options before any work starts; returns the ``distributed`` module."""
    if workers is not None and scheduler is not None:
        raise ValueError("give --workers (a local cluster) or --scheduler (an existing one), not both")
    if scheduler is None and (workers is None or workers < 1):
        raise ValueError(f"--workers must be a positive number, got {workers}")
    return _import_distributed()


@lru_cache(maxsize=2)
def _worker_segmenter(model: str, precision: str, threads: int | None):
    """The model, loaded once per worker process (and per model folder)."""
    from dataclasses import replace

    import torch

    from .runs import load_segmenter

    if threads:
        torch.set_num_threads(threads)
    return replace(load_segmenter(Path(model)), precision=precision)


def segment_task(threads: int | None, model: str, precision: str, path: str, name: str, out: str,
                 outputs: Sequence[str], options: dict) -> dict:
    """One image on a worker (see :func:`sagegan.infer.segment_to_files`)."""
    from .infer import segment_to_files

    seg = _worker_segmenter(model, precision, threads)
    return segment_to_files(seg, Path(path), name, Path(out), outputs, **options)


def analyze_task(threads: int | None, *call):
    """One label image of ``sagegan analyze`` on a worker (see :func:`sagegan.report.analyze_one`)."""
    from .report import analyze_one

    return analyze_one(*call)


def map_on_cluster(function, calls: Sequence[tuple], names: Sequence[str], workers: int | None = None,
                   scheduler: str | None = None, progress: bool = True,
                   description: str = "working") -> Iterator[tuple[int, Any]]:
    """``function(*call)`` for every call, one task each; yields ``(index, result)`` as tasks
    finish, where ``result`` is what the task returned or the exception it raised. ``function``
    gets ``threads`` (the torch threads a task may use, None on an existing cluster) first."""
    distributed = check_cluster_options(workers, scheduler)
    if scheduler is not None:
        client, cluster, threads = distributed.Client(scheduler), None, None
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=40)
        client = distributed.Client(cluster)
    try:
        futures = {client.submit(function, threads, *call, key=f"{function.__name__}-{i}-{name}", pure=False): i
                   for i, (call, name) in enumerate(zip(calls, names))}
        finished: Any = distributed.as_completed(futures)
        if progress:
            from rich.progress import track

            finished = track(finished, total=len(futures), description=f"{description} on "
                             f"{len(client.nthreads())} worker(s)")
        for future in finished:
            error = future.exception()
            yield futures[future], error if error is not None else future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def segment_on_cluster(model: Path, precision: str, files: Sequence[Path], names: dict[Path, str], out: Path,
                       planned: dict[str, list[str]], options: dict, workers: int | None = None,
                       scheduler: str | None = None, progress: bool = True) -> Iterator[tuple[Path, Any]]:
    """Every file as one :func:`segment_task`; yields ``(path, result or exception)`` as they finish."""
    model_path, out_path = str(Path(model).resolve()), str(Path(out).resolve())
    calls = [(model_path, precision, str(path.resolve()), names[path], out_path, planned[names[path]], options)
             for path in files]
    for i, result in map_on_cluster(segment_task, calls, [names[p] for p in files], workers, scheduler, progress,
                                    "segmenting"):
        yield files[i], result
