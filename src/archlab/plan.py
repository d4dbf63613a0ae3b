"""What a run is: its seed, its identity (a hash of everything that sets its numbers), its plan.

Below the store, which keys runs by this identity and decodes their configs, and below the
runner, which plans and executes them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from archlab.datasets import DatasetInfo
from archlab.errors import ArchlabError
from archlab.fields import Strict, repeat_bounds
from archlab.layers import LayerList
from archlab.spec import DataSpec, Study, TrainSpec

__all__ = [
    "DROPOUT_MASKS",
    "DataRecord",
    "RunConfig",
    "RunPlan",
    "bind_data",
    "canonical_json",
    "derive_seed",
    "plan_runs",
]


def derive_seed(study_seed: int, repeat: int) -> int:
    """A run's seed from the study seed and the repeat index only.

    Common random numbers: repeat ``i`` of every model in a study uses the same seed (same
    data order; the split already uses the study seed), so comparisons between models are
    paired. See docs/statistics.md. Adding or removing a model changes no other run.
    """
    digest = hashlib.sha256(f"{study_seed}/repeat/{repeat}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class DataRecord(Strict):
    """What a run on a user's source saw: the source, its content's fingerprint, and what the
    model was built for (so a stored run rebuilds without the data at hand)."""

    name: str  # folder:my-images
    source: str  # the path when it ran (not part of the identity: the folder may move)
    fingerprint: str
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]

    @classmethod
    def of(cls, info: DatasetInfo) -> DataRecord:
        if info.fingerprint is None or info.source is None:
            raise ArchlabError(f"{info.name}: the data must be loaded before its runs are "
                               "planned (its fingerprint is part of every run's identity)")
        return cls(name=info.name, source=info.source, fingerprint=info.fingerprint,
                   image_shape=info.image_shape, class_names=info.class_names)

    def info(self) -> DatasetInfo:
        """The record a model is built from (sizes unknown: 0)."""
        return DatasetInfo(name=self.name, image_shape=self.image_shape,
                           class_names=self.class_names, train_size=0, test_size=0,
                           source=self.source, fingerprint=self.fingerprint)


class RunConfig(Strict):
    """Everything that determines one run's numbers, typed. Its JSON form is its identity
    (less where a user's data lives: a moved folder keeps its runs; its content's fingerprint
    is in it)."""

    model: str
    layers: LayerList
    train: TrainSpec  # `repeats` is not part of it: how many repeats exist changes none of them
    data: DataSpec
    seed: int
    split_seed: int
    #: ``--precision``: fp32 (default) or bf16 autocast. In the identity only when not fp32,
    #: so every fp32 run keeps the id it had before precision existed.
    precision: Literal["fp32", "bf16"] = "fp32"
    #: A user's source only (a built-in's name pins its files: its runs keep their ids).
    dataset: DataRecord | None = None

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        train = self.train.to_config()
        train.pop("repeats", None)
        return {"model": self.model, "layers": [layer.to_config() for layer in self.layers],
                "train": train, "data": self.data.model_dump(mode="json"), "seed": self.seed,
                "split_seed": self.split_seed,
                **({"precision": self.precision} if self.precision != "fp32" else {}),
                **({"dataset": self.dataset.model_dump(mode="json")}
                   if self.dataset is not None else {})}

    @property
    def data_label(self) -> str:
        """The data this run saw, as tables show it: a built-in's name, or a user's source as
        'folder:pets@1a2b3c4d' (with the first eight hex digits of its content's
        fingerprint: runs on changed data show a different label)."""
        if self.dataset is None:
            return self.data.dataset_name
        return f"{self.dataset.name}@{self.dataset.fingerprint[:8]}"

    def identity(self) -> dict[str, Any]:
        """What the run id hashes: :meth:`to_json` without the source's path."""
        out = self.to_json()
        source = self.data.source
        if source is not None:
            out["data"]["dataset"] = {"kind": source.kind, **source.options()}
            out["dataset"].pop("source")
        if _has_dropout(out["layers"]):
            # Store format 4 draws Dropout's masks differently (a new stream from the same
            # seed): such runs get new ids, so a store never mixes them with the old ones.
            out["dropout_masks"] = DROPOUT_MASKS
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunConfig:
        return cls.model_validate(data)

    @property
    def run_id(self) -> str:
        return hashlib.sha256(canonical_json(self.identity()).encode()).hexdigest()[:16]

    def study(self, name: str = "run") -> Study:
        """A one-model study of exactly this run's model, data and training (built for the
        data the run saw, whether or not that data is at hand)."""
        study = Study.model_validate({"name": name, "seed": self.split_seed,
                                      "data": self.data.model_dump(mode="json"),
                                      "train": self.train.to_config(),
                                      "models": {self.model: {"layers":
                                                              self.to_json()["layers"]}}})
        return study.with_dataset(self.dataset.info()) if self.dataset is not None else study


def bind_data(study: Study, config: RunConfig) -> Study:
    """``study`` (as a worker parsed it again) with the data record ``config`` was planned on,
    so its models build without looking at the source (which a Ray node may not have)."""
    return study.with_dataset(config.dataset.info()) if config.dataset is not None else study


@dataclass(frozen=True)
class RunPlan:
    """One run to do: which model, which repeat, its seed, identity and resolved config."""

    run_id: str
    model: str
    repeat: int
    seed: int
    config: RunConfig


def plan_runs(study: Study, *, repeats: int | None = None,
              precision: Literal["fp32", "bf16"] = "fp32") -> list[RunPlan]:
    """Every run the study asks for, in study order (model by model, repeat by repeat).

    A study on a user's source must have its data loaded (``study.data.with_info(raw.info)``):
    the data's fingerprint is part of each run's identity."""
    if repeats is not None and (isinstance(repeats, bool) or repeats < 1):
        raise ArchlabError(f"repeats: expected a whole number >= 1, received {repeats!r}")
    dataset = DataRecord.of(study.data.info) if study.data.source is not None else None
    plans = []
    for name, spec in study.models.items():
        train = study.train_for(name)
        # A race (repeats {min, max, until: decided}) plans its first round: min seeds.
        n = repeat_bounds(train.repeats)[0] if repeats is None else repeats
        for r in range(n):
            seed = derive_seed(study.seed, r)
            config = RunConfig(model=name, layers=spec.layers, train=train.model_copy(
                update={"repeats": 1}), data=study.data, seed=seed, split_seed=study.seed,
                precision=precision, dataset=dataset)
            plans.append(RunPlan(config.run_id, name, r, seed, config))
    return plans


#: How Dropout draws its masks (2: archlab's Dropout from store format 4 on; 1, absent from
#: the identity: ``bernoulli_``, as earlier archlab drew them).
DROPOUT_MASKS = 2


def _has_dropout(layers: Any) -> bool:
    """Whether a layer list in its stored form (branches included) has a Dropout layer."""
    if isinstance(layers, dict):
        return "Dropout" in layers or any(_has_dropout(v) for v in layers.values())
    if isinstance(layers, list):
        return any(_has_dropout(v) for v in layers)
    return False


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
