"""Run folders: what a trained model is on disk, and how training state is saved and resumed.

A run folder (``train-seg --out RUN``, ``train-gan --out GANRUN``) holds

* ``config.json`` — everything needed to rebuild the modules and use them (architecture,
  canonical particle scale, tuned post-processing, how the run was trained);
* the weights as safetensors, never pickled code: ``segmenter.safetensors`` and, in a GANRUN,
  ``generator.safetensors``, both discriminators and optionally ``style_encoder.safetensors``;
* ``last.safetensors`` + ``last_state.json`` — the training state that ``--resume`` continues
  from (module weights, optimiser moments, random-number states, step counters). The counters
  are also kept inside ``last.safetensors`` (its metadata), so that the file is a complete state
  on its own even when a kill falls between the two writes.

Every writer goes through :func:`sagegan.io.atomic_write`, so a run killed while saving keeps
its previous files. Inference, training and synthesis import this module, not each other.

How the trainers guard a run folder (:class:`RunFolder`, :class:`StopSignals`):

* An existing non-empty ``--out`` is refused unless ``--resume`` (continue it) or ``--overwrite``.
* ``--overwrite`` trains the new run in a fresh sibling folder ``RUN.partial-<time>``; the old
  ``RUN`` is not touched until the new run's first checkpoint (its first ``last.safetensors``) is
  complete. Then the old folder is renamed ``RUN.bak-<time>`` and the new one renamed ``RUN``
  (two renames in the same parent folder), and training continues there. Nothing is deleted and
  the two runs never share a folder. A run that fails before its first checkpoint removes its own
  partial folder (it holds only files that run wrote); one killed by SIGKILL leaves it behind.
* ``RUN/.lock``, created with ``O_EXCL``, holds the pid and host of the process training into
  ``RUN``; a second process is refused. A lock whose process (on this host) is gone is taken over
  with a one-line note.
* SIGINT and SIGTERM only set a flag; the loop checks it between steps and stops as a time budget
  would (validate once if it has not this sitting, tune, save the state at the current step),
  then raises :class:`TrainingInterrupted`. The command line prints how to resume and exits with
  128 + the signal number (130 for Ctrl-C, 143 for SIGTERM). A second signal acts as usual.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .io import InputError, atomic_write, atomic_write_text, json_ready, read_json, write_json
from .nets.attention_unet import AttentionUNet, inference_copy

SEGMENTER_FILE = "segmenter.safetensors"
GENERATOR_FILE = "generator.safetensors"
DISC_IMAGE_FILE = "disc_image.safetensors"
DISC_MASK_FILE = "disc_mask.safetensors"
STYLE_ENCODER_FILE = "style_encoder.safetensors"
CONFIG_FILE = "config.json"
LAST_STATE_TENSORS = "last.safetensors"
LAST_STATE_JSON = "last_state.json"
STATE_METADATA_KEY = "sagegan_state"
LOCK_FILE = ".lock"
# Predicted instances smaller than this share of a canonical particle's area are specks (models
# whose config.json has no tuned ``postprocess.min_area_fraction``).
MIN_AREA_FRACTION = 0.05
DEFAULT_POSTPROCESS = {"fg_threshold": 0.5, "seed_threshold": 0.5, "min_area_fraction": MIN_AREA_FRACTION}


# ------------------------------------------------------------------------------- environment


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown --device {name!r} (expected auto, cpu or cuda)")
    return torch.device(name)


def git_commit() -> str | None:
    """The commit of the sagegan checkout this code runs from, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# ------------------------------------------------------------------------------- tensors


def save_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> Path:
    """Write tensors as safetensors (CPU, contiguous), atomically."""
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(flat, str(tmp), metadata=metadata))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except Exception as exc:
        raise InputError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0][:120]})") from None


def load_module_weights(module: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Load weights saved by :func:`save_tensors` into ``module``; clear error on mismatch."""
    _load_state(module, load_tensors(path), path)
    return module


def _load_state(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        detail = (f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} wrong-shaped tensors"
                  f" (e.g. {(missing + unexpected + wrong)[0]})")
        raise InputError(f"{path}: weights do not fit the architecture in config.json: {detail}")
    module.load_state_dict(state)


# ------------------------------------------------------------------------------- models


@dataclass
class Segmenter:
    """A trained segmenter and the settings it was trained with."""

    net: AttentionUNet
    config: dict[str, Any]
    path: Path | None = None
    # "bf16": inference with bfloat16 weights and activations (probabilities and distances still
    # float32), for CPUs with bf16 units; "fp32" otherwise
    precision: str = "fp32"
    # the model whose zoom search picks the zoom for this one (``config["zoom_guide"]``, a folder
    # inside the run): label-free adaptation keeps its source model's search (BENCHMARKS.md)
    zoom_guide: Segmenter | None = None

    @property
    def fast_net(self) -> AttentionUNet:
        """The network prepared for inference (rebuilt when the weights have changed)."""
        version = sum(int(p._version) for p in self.net.parameters())
        key = (id(self.net), version, self.net.training, self.precision)
        if getattr(self, "_fast", None) is None or self._fast_key != key:
            fast = inference_copy(self.net)
            self._fast = fast.to(torch.bfloat16) if self.precision == "bf16" else fast
            self._fast_key = key
        return self._fast

    def with_precision(self, precision: str) -> Segmenter:
        """The same segmenter (the same weights) run in ``precision``; made once, then cached."""
        if precision == self.precision:
            return self
        twins = self.__dict__.setdefault("_twins", {})
        if precision not in twins:
            twins[precision] = replace(self, precision=precision)
        return twins[precision]

    @property
    def canonical_diameter_px(self) -> float | None:
        return self.config.get("canonical_diameter_px")

    @property
    def postprocess(self) -> dict[str, float]:
        return {**DEFAULT_POSTPROCESS, **self.config.get("postprocess", {})}


# ------------------------------------------------------------------------------- the bundled model

GENERAL_MODEL = "general"
BUNDLED_MODELS_DIR = Path(__file__).parent / "models"


def resolve_model(model: str | Path | None) -> Path:
    """The model folder that ``--model`` names: None or ``"general"`` is the model bundled with sagegan.

    A folder named ``general`` in the working directory wins over the bundled model, with a
    one-line note saying so; ``"general@VERSION"`` pins the bundled model's version (refused when
    this install ships another); any other value is a RUN folder.
    """
    import warnings

    from .io import InputWarning

    name, _, pinned = str(model if model is not None else GENERAL_MODEL).partition("@")
    if name != GENERAL_MODEL:
        return Path(model)  # type: ignore[arg-type]
    if model is not None and not pinned and Path(GENERAL_MODEL).is_dir():
        warnings.warn(f"{Path(GENERAL_MODEL).resolve()}: using this folder, not the bundled general model "
                      f"(name another folder, or pass --model {BUNDLED_MODELS_DIR / GENERAL_MODEL})", InputWarning)
        return Path(GENERAL_MODEL)
    bundled = BUNDLED_MODELS_DIR / GENERAL_MODEL
    if not (bundled / SEGMENTER_FILE).is_file():
        raise InputError(f"{bundled}: this install has no bundled general model yet; pass --model RUN "
                         "(a folder written by `sagegan train-seg`)")
    if pinned:
        version = read_json(bundled / CONFIG_FILE).get("version")
        if str(version) != pinned:
            raise InputError(f"--model {model}: the bundled general model is version {version}; install the "
                             f"sagegan release that ships version {pinned}, or drop @{pinned}")
    return bundled


def weights_sha256(path: str | Path) -> str:
    """The SHA-256 of a weights file: it names exactly which weights made an output."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_provenance(seg: "Segmenter") -> dict[str, Any]:
    """Which model made an output: name, version, weights hash, and the sagegan version reading it."""
    from . import __version__

    path = seg.path
    weights = path / SEGMENTER_FILE if path is not None else None
    return {"model_name": seg.config.get("name") or (path.name if path is not None else None),
            "model_version": seg.config.get("version"),
            "model_sha256": weights_sha256(weights) if weights is not None and weights.is_file() else None,
            "sagegan_version": __version__}


def _run_config(run_dir: str | Path) -> tuple[Path, dict]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: model folder not found")
    return run_dir, read_json(run_dir / CONFIG_FILE)


def load_segmenter(run_dir: str | Path, device: str | torch.device = "cpu") -> Segmenter:
    """The segmenter of a RUN (or GANRUN) folder: ``segmenter.safetensors`` + ``config.json``."""
    run_dir, config = _run_config(run_dir)
    model_cfg = config.get("model")
    if not isinstance(model_cfg, dict) or "widths" not in model_cfg:
        raise InputError(f"{run_dir / CONFIG_FILE}: no 'model' section with the architecture; "
                         "is this a sagegan model folder?")
    try:
        net = AttentionUNet.from_config(model_cfg)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{run_dir / CONFIG_FILE}: invalid architecture ({exc})") from None
    load_module_weights(net, run_dir / SEGMENTER_FILE)
    net.to(device).eval()
    guide = None
    if config.get("zoom_guide"):
        guide_dir = run_dir / config["zoom_guide"]
        if not (guide_dir / CONFIG_FILE).is_file():
            raise InputError(f"{run_dir}: the model that picks its zoom ({config['zoom_guide']}/) is missing; "
                             "copy the whole run folder")
        guide = load_segmenter(guide_dir, device)
    return Segmenter(net, config, run_dir, zoom_guide=guide)


def load_generator(run_dir: str | Path, device: str | torch.device = "cpu"):
    """The generator of a GANRUN folder (eval mode) and the folder's config."""
    from .nets.style_unet import StyleUNet

    run_dir, config = _run_config(run_dir)
    if "generator" not in config:
        raise InputError(f"{run_dir / CONFIG_FILE}: no 'generator' section; is this a `sagegan train-gan` folder?")
    gen = StyleUNet(**config["generator"])
    load_module_weights(gen, run_dir / GENERATOR_FILE)
    return gen.to(device).eval(), config


def has_style_encoder(run_dir: str | Path, config: dict) -> bool:
    return "style_encoder" in config and (Path(run_dir) / STYLE_ENCODER_FILE).exists()


def load_style_encoder(run_dir: str | Path, config: dict, device: str | torch.device = "cpu"):
    """The style encoder of a GANRUN trained with ``--style-encoder`` (eval mode)."""
    from .nets.style_encoder import StyleEncoder

    if not has_style_encoder(run_dir, config):
        raise InputError(f"{run_dir}: no style encoder in this run (train it with `train-gan --style-encoder`)")
    encoder = StyleEncoder(**config["style_encoder"])
    load_module_weights(encoder, Path(run_dir) / STYLE_ENCODER_FILE)
    return encoder.to(device).eval()


def save_modules(out: str | Path, modules: Mapping[str, torch.nn.Module]) -> None:
    """Write each module's weights to ``out/<file name>`` (e.g. ``{SEGMENTER_FILE: net}``)."""
    for name, module in modules.items():
        if module is not None:
            save_tensors(Path(out) / name, module.state_dict())


# ------------------------------------------------------------------------------- training state


@dataclass
class TrainingState:
    """Everything ``--resume`` needs besides the config: what to save and where it lives.

    ``modules`` and ``optimizers`` map a short prefix (``"model"``, ``"G"``, ``"optS"``...) to the
    object; ``generators`` maps a name to a ``torch.Generator`` whose state is kept too (the
    global torch RNG is always kept). ``counters`` are the loop's plain numbers (step, best score,
    elapsed seconds...), returned by :meth:`load`.
    """

    modules: Mapping[str, torch.nn.Module]
    optimizers: Mapping[str, torch.optim.Optimizer]
    scheduler: Any
    rng: np.random.Generator
    generators: Mapping[str, torch.Generator] | None = None

    def save(self, out: str | Path, counters: Mapping[str, Any]) -> None:
        out = Path(out)
        tensors: dict[str, torch.Tensor] = {}
        for prefix, module in self.modules.items():
            tensors.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
        scalars: dict[str, Any] = {}
        for prefix, opt in self.optimizers.items():
            t, scalars[prefix] = _optimizer_tensors(opt, prefix)
            tensors.update(t)
        tensors["rng.torch"] = torch.get_rng_state()
        for name, gen in (self.generators or {}).items():
            tensors[f"rng.{name}"] = gen.get_state()
        saved = {**counters, "optimizers": scalars, "scheduler": self.scheduler.state_dict(),
                 "numpy_rng": self.rng.bit_generator.state}
        # the counters travel inside the tensors file too: it alone is a consistent state
        text = json.dumps(json_ready(saved, finite=False), allow_nan=True)
        save_tensors(out / LAST_STATE_TENSORS, tensors, metadata={STATE_METADATA_KEY: text})
        write_json(out / LAST_STATE_JSON, saved, strict=False)

    def load(self, out: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
        """Restore everything from ``out``; returns the saved counters."""
        out = Path(out)
        if not (out / LAST_STATE_TENSORS).exists():
            raise InputError(f"{out}: nothing to resume (no {LAST_STATE_TENSORS})")
        tensors = load_tensors(out / LAST_STATE_TENSORS)
        saved = _state_metadata(out / LAST_STATE_TENSORS)
        if saved is None:  # a state saved before the counters were kept in the tensors file
            saved = read_json(out / LAST_STATE_JSON)
        if "optimizer" in saved:  # a phase 1 state saved before both phases shared this format
            saved["optimizers"] = {"opt": saved.pop("optimizer")}
        for prefix, module in self.modules.items():
            _load_state(module, _with_prefix(tensors, prefix), out / LAST_STATE_TENSORS)
        for prefix, opt in self.optimizers.items():
            opt_tensors = {k: v.to(device) for k, v in tensors.items() if k.startswith(prefix + ".")}
            _restore_optimizer(opt, opt_tensors, saved["optimizers"][prefix], prefix)
        self.scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(tensors["rng.torch"])
        for name, gen in (self.generators or {}).items():
            gen.set_state(tensors[f"rng.{name}"])
        self.rng.bit_generator.state = saved["numpy_rng"]
        return {k: v for k, v in saved.items() if k not in ("optimizers", "scheduler", "numpy_rng")}


def _state_metadata(path: Path) -> dict | None:
    """The counters kept in ``last.safetensors``'s metadata, or None for an older state file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            text = (f.metadata() or {}).get(STATE_METADATA_KEY)
        return None if text is None else json.loads(text)
    except Exception as exc:
        raise InputError(f"{path}: not a readable training state ({str(exc).splitlines()[0][:120]})") from None


# The prefix under which each trainer's TrainingState keeps the segmenter.
SEGMENTER_STATE_PREFIX = {"sagegan-segmenter": "model", "sagegan-gan": "S"}


def last_segmenter_weights(run_dir: str | Path) -> dict[str, torch.Tensor]:
    """The segmenter's weights as a RUN or GANRUN stood when its training stopped (not the
    checkpoint chosen on validation images)."""
    run_dir, config = _run_config(run_dir)
    prefix = SEGMENTER_STATE_PREFIX.get(config.get("kind"))
    if prefix is None:
        raise InputError(f"{run_dir / CONFIG_FILE}: unknown run kind {config.get('kind')!r}")
    return _with_prefix(load_tensors(run_dir / LAST_STATE_TENSORS), prefix)


def _with_prefix(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def _optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state into flat tensors (safetensors) and JSON-able scalars."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {"param_groups": state["param_groups"], "state": {}}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{idx}.{key}"] = value
            else:
                scalars["state"].setdefault(str(idx), {})[key] = value
    return tensors, scalars


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], scalars: dict,
                       prefix: str) -> None:
    """Inverse of :func:`_optimizer_tensors`."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        idx, key = name[len(prefix) + 1:].split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for idx, entry in scalars.get("state", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": scalars["param_groups"]})


# ------------------------------------------------------------------------------- run folders


def check_resume_architecture(run_dir: str | Path, current: Mapping[str, Any]) -> None:
    """On ``--resume``: each section of ``current`` (e.g. ``{"model": ...}``) must equal the one the
    run's config.json recorded; otherwise one line naming the file and the first difference."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        return
    previous = read_json(path)
    for section, value in current.items():
        old, new = json_ready(previous.get(section)), json_ready(value)
        if old is None or old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            differ = sorted(k for k in set(old) & set(new) if old[k] != new[k])  # keys an older run lacks: no say
            if not differ:
                continue
            key = differ[0]
            detail = f"{section}.{key} is {old.get(key)!r} there, {new.get(key)!r} here"
        else:
            detail = f"{section} is {old!r} there, {new!r} here"
        raise InputError(f"{Path(run_dir) / LAST_STATE_TENSORS}: saved with another architecture ({detail}); "
                         f"resume with the settings the run was trained with ({path})")


def check_distinct_folders(out: str | Path, other: str | Path, what: str) -> None:
    """Refuse ``out`` when it is the folder ``other`` however spelled (``--out`` equal to ``--seg``)."""
    if Path(out).resolve() == Path(other).resolve():
        raise InputError(f"{out}: --out is the {what} folder ({other}); write the new run to another folder")


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by the trainers after SIGINT or SIGTERM, once the run is saved and can be resumed.

    A subclass of :class:`KeyboardInterrupt`, so ``except Exception`` blocks let it through.
    """

    def __init__(self, run_dir: str | Path, signum: int, step: int):
        self.run_dir, self.signum, self.step = Path(run_dir), int(signum), int(step)
        super().__init__(f"interrupted at step {step}; {run_dir} is saved and can be resumed")

    @property
    def exit_status(self) -> int:
        """The shell's convention for a process stopped by a signal: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


class StopSignals:
    """While active, SIGINT and SIGTERM set :attr:`signum` instead of stopping the process.

    The handler does nothing else (and restores the previous handlers, so that a second signal
    acts as usual); the training loop checks :attr:`signum` between steps. Outside the main
    thread, where Python cannot install handlers, and for signals the process ignores, nothing
    changes.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        self.signum = signum
        self._restore()

    def _restore(self) -> None:
        previous, self._previous = self._previous, {}
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()


def check_run_folder(path: str | Path, resume: bool = False, overwrite: bool = False) -> bool:
    """Refuse to train into ``path`` when that would clobber a run; returns whether it holds files.

    A missing or empty folder is fine; a non-empty one needs ``resume`` or ``overwrite``. The
    command line calls this before reading any data, :class:`RunFolder` again once it holds the lock.
    """
    path = Path(path)
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other: continue the run, or replace it")
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a folder")
    if not path.exists():
        if resume:
            raise InputError(f"{path}: nothing to resume (folder not found)")
        return False
    holder = _lock_holder(path / LOCK_FILE)
    if holder is not None and holder != (os.getpid(), socket.gethostname()) and _alive(*holder):
        raise InputError(_busy(path, holder))
    used = sorted(p.name for p in path.iterdir() if p.name != LOCK_FILE)
    if used and not (resume or overwrite):
        raise InputError(f"{path}: not empty (holds {used[0]}{' ...' if len(used) > 1 else ''}); continue the run "
                         f"with --resume, or replace it with --overwrite (the old run is kept as "
                         f"{path.name}.bak-<time>)")
    return bool(used)


class RunFolder:
    """The folder a training run writes to, guarded as the module docstring describes.

    Use as a context manager around the whole run; :attr:`path` is where to write now (the
    partial sibling folder of an ``overwrite`` until :meth:`checkpointed`, then ``final``).
    """

    def __init__(self, path: str | Path, resume: bool = False, overwrite: bool = False):
        self.final = Path(path)
        self.resume, self.overwrite = resume, overwrite
        self.path = self.final
        self.backup: Path | None = None
        self._locks: list[Path] = []

    def __enter__(self) -> "RunFolder":
        final = self.final
        check_run_folder(final, self.resume, self.overwrite)
        final.mkdir(parents=True, exist_ok=True)
        self._lock(final)
        try:
            used = check_run_folder(final, self.resume, self.overwrite)  # again, now that it is locked
            if used and self.overwrite:
                self.path = unique_sibling(final, "partial")
                self.path.mkdir()
                self._lock(self.path)
        except BaseException:
            self._unlock_all()
            raise
        return self

    def checkpointed(self) -> None:
        """The run has written a complete checkpoint: an ``overwrite`` now takes the old run's place."""
        if self.path == self.final:
            return
        final, partial = self.final, self.path
        self.backup = unique_sibling(final, "bak")
        os.rename(final, self.backup)
        self._release(self.backup / LOCK_FILE)
        try:
            os.rename(partial, final)
        except OSError as exc:
            self.path = self.final  # keep the partial folder: it now holds the only copy of the new run
            raise InputError(f"{final}: could not move the new run into place ({exc.strerror}); it is in "
                             f"{partial}, the old run in {self.backup}") from None
        self._locks = [final / LOCK_FILE]
        self.path = final
        print(f"sagegan: {final}: the previous run was moved to {self.backup}", file=sys.stderr)

    def __exit__(self, exc_type, exc, tb) -> None:
        self._unlock_all()
        if exc_type is not None and self.path != self.final:
            # failed before its first checkpoint: the partial folder holds only this run's files
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = self.final

    # -- the lock

    def _lock(self, folder: Path) -> None:
        path = folder / LOCK_FILE
        me = f"{os.getpid()} {socket.gethostname()}\n"
        for attempt in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _lock_holder(path)
                if attempt or holder is None or _alive(*holder):
                    raise InputError(_busy(folder, holder)) from None
                print(f"sagegan: note: {path}: taking over the lock of process {holder[0]}, which is no "
                      "longer running", file=sys.stderr)
                path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self._locks.append(path)
            return

    def _release(self, path: Path) -> None:
        """Remove a lock file of this process (only if it still names this process)."""
        holder = _lock_holder(path)
        if holder is not None and holder[0] == os.getpid() and holder[1] == socket.gethostname():
            path.unlink(missing_ok=True)
        if path in self._locks:
            self._locks.remove(path)

    def _unlock_all(self) -> None:
        for path in list(self._locks):
            self._release(path)


def _busy(folder: Path, holder: tuple[int, str] | None) -> str:
    who = f"process {holder[0]} on {holder[1]}" if holder else "another process"
    return (f"{folder}: {who} is training into this folder; wait for it to finish, or delete "
            f"{folder / LOCK_FILE} if that process is gone")


def _lock_holder(path: Path) -> tuple[int, str] | None:
    """(pid, host) written in a lock file, or None when it cannot be read."""
    try:
        pid, host = path.read_text().split()
        return int(pid), host
    except (OSError, ValueError):
        return None


def _alive(pid: int, host: str) -> bool:
    """Whether the process holding a lock may still run (always assumed on another host)."""
    if host != socket.gethostname():
        return True
    if pid == os.getpid():
        return True  # this very process: a second training into the same folder
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def unique_sibling(folder: Path, tag: str) -> Path:
    """``<folder>.<tag>-<YYYYmmdd-HHMMSS>`` beside ``folder``, numbered when that exists already."""
    folder = folder.resolve()
    base = folder.with_name(f"{folder.name}.{tag}-{time.strftime('%Y%m%d-%H%M%S')}")
    candidate, n = base, 1
    while candidate.exists():
        candidate, n = base.with_name(f"{base.name}-{n}"), n + 1
    return candidate


def trim_log(path: str | Path, step: int) -> None:
    """Drop the rows of a ``train_log.csv`` logged after ``step`` (a resumed run logs them again)."""
    import csv
    import io

    path = Path(path)
    if not path.exists():
        return
    rows = list(csv.reader(path.read_text().splitlines()))
    keep = rows[:1] + [r for r in rows[1:] if r and _number(r[0]) <= step]
    if len(keep) < len(rows):
        buffer = io.StringIO()
        csv.writer(buffer).writerows(keep)
        atomic_write_text(path, buffer.getvalue())


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")
