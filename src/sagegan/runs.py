"""Run folders: what a trained model is on disk, and how training state is saved and resumed.

A run folder (``train-seg --out RUN``, ``train-gan --out GANRUN``) holds

* ``config.json`` — everything needed to rebuild the modules and use them (architecture,
  canonical particle scale, tuned post-processing, how the run was trained);
* the weights as safetensors, never pickled code: ``segmenter.safetensors`` and, in a GANRUN,
  ``generator.safetensors``, both discriminators and optionally ``style_encoder.safetensors``;
* ``last.safetensors`` + ``last_state.json`` — the training state that ``--resume`` continues
  from (module weights, optimiser moments, random-number states, step counters).

Every writer goes through :func:`sagegan.io.atomic_write`, so a run killed while saving keeps
its previous files. Inference, training and synthesis import this module, not each other.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .io import InputError, atomic_write, read_json, write_json
from .nets.attention_unet import AttentionUNet, inference_copy

SEGMENTER_FILE = "segmenter.safetensors"
GENERATOR_FILE = "generator.safetensors"
DISC_IMAGE_FILE = "disc_image.safetensors"
DISC_MASK_FILE = "disc_mask.safetensors"
STYLE_ENCODER_FILE = "style_encoder.safetensors"
CONFIG_FILE = "config.json"
LAST_STATE_TENSORS = "last.safetensors"
LAST_STATE_JSON = "last_state.json"
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

    @property
    def fast_net(self) -> AttentionUNet:
        """The network prepared for inference (rebuilt when the weights have changed)."""
        version = sum(int(p._version) for p in self.net.parameters())
        key = (id(self.net), version, self.net.training)
        if getattr(self, "_fast", None) is None or self._fast_key != key:
            self._fast = inference_copy(self.net)
            self._fast_key = key
        return self._fast

    @property
    def canonical_diameter_px(self) -> float | None:
        return self.config.get("canonical_diameter_px")

    @property
    def postprocess(self) -> dict[str, float]:
        return {**DEFAULT_POSTPROCESS, **self.config.get("postprocess", {})}


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
    return Segmenter(net, config, run_dir)


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
        save_tensors(out / LAST_STATE_TENSORS, tensors)
        write_json(out / LAST_STATE_JSON, {**counters, "optimizers": scalars,
                                           "scheduler": self.scheduler.state_dict(),
                                           "numpy_rng": self.rng.bit_generator.state}, strict=False)

    def load(self, out: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
        """Restore everything from ``out``; returns the saved counters."""
        out = Path(out)
        if not (out / LAST_STATE_TENSORS).exists():
            raise InputError(f"{out}: nothing to resume (no {LAST_STATE_TENSORS})")
        tensors = load_tensors(out / LAST_STATE_TENSORS)
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
