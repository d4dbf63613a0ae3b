"""A trained model out of a study directory: pick the run, verify its weights, rebuild the network.

Weights are read only from safetensors (a header of JSON plus raw tensor bytes), never from a
pickle, so loading a file cannot run code. A file that is truncated, is not safetensors (a
renamed ``torch.save`` pickle, say), belongs to another run or does not fit the run's layers
is refused with one line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

from archlab.datasets import ImageOptions, dataset_info
from archlab.errors import StoreError
from archlab.model import build_model
from archlab.plan import RunConfig
from archlab.store import RUNS_DIR, STORE_FILE, WEIGHTS_FILE, RunRecord, RunStatus, Store

__all__ = [
    "SELECTION",
    "ModelInfo",
    "RunSource",
    "TrainedModel",
    "build_network",
    "find_run",
    "load_trained",
    "model_info",
    "read_weights",
]

#: How the best run of a model is chosen: highest validation accuracy, then lowest val loss.
SELECTION = "best val_accuracy (ties: lower val_loss)"


@dataclass(frozen=True)
class ModelInfo:
    """What a trained model is and what it expects: also the metadata of an exported file."""

    study: str
    model: str
    run_id: str
    dataset: str
    #: "scale", "standardize" or {"normalize": {"axis": 1, "order": 2}}
    preprocessing: str | dict[str, Any]
    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]  # one sample, channels first: (1, 28, 28), (3, 32, 32)
    metrics: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  # the run's RunConfig JSON
    #: The run's preprocessing with its numbers: {"kind": "scale"}, or {"standardize": {"mean":
    #: [...], "std": [...]}} (per channel, 0-255 units, of its training split)
    preprocess: dict[str, Any] = field(default_factory=dict)
    #: How an image file becomes the input, for a user's image source: its color_mode,
    #: image_size, interpolation, crop_to_aspect_ratio and pad_to_aspect_ratio (None: the
    #: dataset's own policy; see archlab.inference.images)
    image: dict[str, Any] | None = None

    @property
    def channels(self) -> int:
        """Colour channels of the input: 1 grey, 3 RGB, 4 RGBA."""
        return self.input_shape[0]

    @property
    def image_options(self) -> ImageOptions:
        """How an image file is decoded and resized to this model's input."""
        c, h, w = self.input_shape
        mode = {1: "grayscale", 3: "rgb", 4: "rgba"}[c]
        given = {k: v for k, v in (self.image or {}).items() if k in ImageOptions.model_fields}
        return ImageOptions.model_validate({"color_mode": mode, "interpolation": "bilinear",
                                            **given, "image_size": [h, w]})

    def to_metadata(self) -> dict[str, str]:
        """String key/values for ONNX ``metadata_props``, safetensors or TorchScript."""
        from archlab.version import __version__

        return {
            "study": self.study, "model": self.model, "run_id": self.run_id,
            "dataset": self.dataset, "preprocessing": json.dumps(self.preprocessing),
            "class_names": json.dumps(list(self.class_names)),
            "input_shape": json.dumps(["batch", *self.input_shape]),
            "channels": str(self.channels),
            "preprocess": json.dumps(self.preprocess, sort_keys=True),
            "image": json.dumps(self.image, sort_keys=True),
            "input": "float32 NCHW, already preprocessed (see preprocessing)",
            "output": "class probabilities (softmax), one row per image",
            "metrics": json.dumps(self.metrics, sort_keys=True),
            "config": json.dumps(self.config, sort_keys=True),
            "archlab_version": __version__,
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> ModelInfo:
        """Inverse of :meth:`to_metadata` (raises ``KeyError``/``ValueError`` when malformed)."""
        shape = json.loads(meta["input_shape"])
        return cls(study=meta["study"], model=meta["model"], run_id=meta["run_id"],
                   dataset=meta["dataset"], preprocessing=json.loads(meta["preprocessing"]),
                   class_names=tuple(json.loads(meta["class_names"])),
                   input_shape=tuple(int(d) for d in shape[1:]),  # type: ignore[arg-type]
                   metrics=json.loads(meta.get("metrics", "{}")),
                   config=json.loads(meta.get("config", "{}")),
                   preprocess=json.loads(meta.get("preprocess", "{}")),
                   image=json.loads(meta.get("image", "null")))

    @property
    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """Standardize's per-channel (mean, std) of the training split, or None."""
        found = self.preprocess.get("standardize")
        return (tuple(found["mean"]), tuple(found["std"])) if found else None


class TrainedModel(nn.Module):
    """A trained run's network, frozen, in eval mode. ``forward`` takes preprocessed float32
    NCHW images and returns class probabilities (the softmax of Keras's output layer, as
    Keras's ``model.predict`` gives); ``network`` is the bare module, which returns logits.
    Its parameters do not require gradients (``requires_grad_(True)`` to fine-tune)."""

    def __init__(self, network: nn.Module, info: ModelInfo) -> None:
        super().__init__()
        self.network = network
        self.info = info
        self.eval()
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.network(x), dim=1)


@dataclass(frozen=True)
class RunSource:
    """Where a trained run was found: its store record and the path of its weights."""

    study: str
    record: RunRecord
    weights: Path
    data: bytes  # the weights file's bytes, verified against the store's checksum if it has one


def _best(records: Iterable[RunRecord]) -> RunRecord | None:
    usable = [r for r in records if r.status == RunStatus.FINISHED
              and math.isfinite(r.metrics.get("val_accuracy", math.nan))]
    if not usable:
        return None
    return max(usable, key=lambda r: (r.metrics["val_accuracy"],
                                      -r.metrics.get("val_loss", math.inf)))


def _study_name(store: Store, directory: Path) -> str:
    name = store.meta().get("study")
    return name if isinstance(name, str) and name else directory.resolve().name


def _weights_bytes(store: Store, run_id: str) -> bytes:
    # Checked against the SHA-256 and size the store recorded when it wrote the file. A v1
    # store (from before checksums) opened read-only records none: structural checks only.
    if store.version >= 2:
        return store.read_verified(run_id, WEIGHTS_FILE)
    path = store.run_dir(run_id) / WEIGHTS_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise StoreError(f"{path}: weights file missing") from None
    except OSError as exc:
        raise StoreError(f"{path}: unreadable ({exc.strerror or exc})") from None


def find_run(directory: str | Path, model: str | None = None) -> RunSource:
    """The run to use: in a study directory, the best finished run of ``model`` (of any model
    when None; see :data:`SELECTION`); in a run directory (``DIR/runs/<id>``), that run."""
    path = Path(directory)
    if not path.is_dir():
        raise StoreError(f"{path}: no such directory (expected a study directory or "
                         "STUDY_DIR/runs/<run id>)")
    if (path / STORE_FILE).is_file():
        study_dir, run_id = path, None
    elif path.parent.name == RUNS_DIR and (path.parent.parent / STORE_FILE).is_file():
        study_dir, run_id = path.parent.parent, path.name
    else:
        raise StoreError(f"{path}: not a study directory (no {STORE_FILE}) nor a run directory "
                         "(STUDY_DIR/runs/<run id>)")
    with Store(study_dir, readonly=True) as store:
        study = _study_name(store, study_dir)
        if run_id is not None:
            found = store.runs(run_ids=[run_id])
            if not found:
                raise StoreError(f"{path}: run {run_id} is not in the store of {study_dir}")
            record = found[0]
            if model is not None and record.model != model:
                raise StoreError(f"{path}: run {run_id} is of model '{record.model}', not "
                                 f"'{model}'")
            if record.status != RunStatus.FINISHED:
                raise StoreError(f"{path}: run {run_id} is {record.status}, not finished; it "
                                 "has no final weights")
        else:
            records = store.runs()
            models = sorted({r.model for r in records})
            if model is not None and model not in models:
                raise StoreError(f"{study_dir}: Expected a model of study '{study}' "
                                 f"({', '.join(models) or 'none run yet'}), received '{model}'")
            best = _best(r for r in records if model is None or r.model == model)
            if best is None:
                which = f"model '{model}'" if model else "any model"
                raise StoreError(f"{study_dir}: no finished run of {which} with a validation "
                                 "accuracy; train it first with `archlab run`")
            record = best
        data = _weights_bytes(store, record.run_id)
        path = store.run_dir(record.run_id) / WEIGHTS_FILE
    return RunSource(study, record, path, data)


def read_weights(data: bytes, where: Path, run_id: str | None = None
                 ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of safetensors bytes, checked: a complete safetensors file (never
    unpickled), of run ``run_id`` when its metadata names one, every value finite."""
    try:
        tensors = safetensors.torch.load(data)
        size = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8:8 + size]).get("__metadata__") or {}
    except (SafetensorError, ValueError, RuntimeError, AttributeError) as exc:
        detail = " ".join(str(exc).split()) or exc.__class__.__name__
        raise StoreError(f"{where}: not a valid safetensors weights file (truncated or "
                         f"tampered?): {detail}") from None
    if run_id is not None and meta.get("run_id") not in (None, run_id):
        raise StoreError(f"{where}: these weights belong to run {meta['run_id']}, not {run_id}")
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise StoreError(f"{where}: non-finite values in {bad[0]} (tampered or diverged "
                         "weights)")
    return tensors, meta


def build_network(config: RunConfig, tensors: dict[str, torch.Tensor], where: Path) -> nn.Module:
    """The run's network with ``tensors`` loaded (strictly: every key, every shape)."""
    with torch.random.fork_rng(devices=[]):  # building draws initial weights: keep the RNG
        network = build_model(config.study(), config.model).module
    try:
        network.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = next((ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()), str(exc))
        raise StoreError(f"{where}: the weights do not fit model '{config.model}': "
                         f"{first}") from None
    return network.eval()


def model_info(study: str, record: RunRecord, weights_meta: dict[str, str] | None = None
               ) -> ModelInfo:
    """The :class:`ModelInfo` of a stored run (``weights_meta``: its weights file's metadata,
    which holds the preprocessing's numbers)."""
    config = record.config
    info = config.dataset.info() if config.dataset is not None \
        else dataset_info(config.data.dataset)  # type: ignore[arg-type]
    h, w, c = info.image_shape
    source = config.data.source
    image = None
    if isinstance(source, ImageOptions):
        image = {k: v for k, v in source.options().items()
                 if k in ("color_mode", "image_size", "interpolation", "crop_to_aspect_ratio",
                          "pad_to_aspect_ratio")}
    preprocess = json.loads((weights_meta or {}).get("preprocess", "{}"))
    return ModelInfo(study=study, model=record.model, run_id=record.run_id,
                     dataset=config.data.dataset_name,
                     preprocessing=config.data.model_dump(mode="json")["preprocessing"],
                     class_names=info.class_names,
                     input_shape=(c, h, w), metrics=dict(record.metrics),
                     config=record.config_json, preprocess=preprocess, image=image)


def load_trained(directory: str | Path, model: str | None = None) -> TrainedModel:
    """The trained network of a study (its best finished run of ``model``, or of any model when
    None), of a run directory, or of a file written by ``archlab export --format safetensors``;
    on the CPU, in eval mode; it outputs probabilities.

    Feed it :func:`archlab.preprocess_images` of your images.
    """
    path = Path(directory)
    if path.is_file():
        return _load_exported(path, model)
    source = find_run(path, model)
    tensors, meta = read_weights(source.data, source.weights, source.record.run_id)
    network = build_network(source.record.config, tensors, source.weights)
    return TrainedModel(network, model_info(source.study, source.record, meta))


def _load_exported(path: Path, model: str | None) -> TrainedModel:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StoreError(f"{path}: unreadable ({exc.strerror or exc})") from None
    tensors, meta = read_weights(data, path)
    try:
        info = ModelInfo.from_metadata(meta)
        config = RunConfig.from_json(info.config)
    except (KeyError, ValueError, TypeError) as exc:
        raise StoreError(f"{path}: not an archlab export (metadata missing or malformed: "
                         f"{exc!r}); write one with `archlab export --format safetensors`"
                         ) from None
    if model is not None and model != info.model:
        raise StoreError(f"{path}: holds model '{info.model}', not '{model}'")
    return TrainedModel(build_network(config, tensors, path), info)
