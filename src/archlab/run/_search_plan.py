"""A search's trials as archlab studies (run/search.py): the one-model study of a trial or of a
point, the points a search is checked at before it runs (:func:`validate_search`), its projected
time, and the fingerprint that says whether the trials an earlier run left are comparable.
"""

from __future__ import annotations

import hashlib
from typing import Any

from archlab.errors import SpecError
from archlab.fields import repeat_bounds
from archlab.plan import canonical_json
from archlab.spec import ModelSpec, Study
from archlab.spec.search import search_points, trial_point

__all__ = ["search_projection", "search_studies", "trial_study", "validate_search"]


def _epochs(study: Study) -> int:
    assert study.search is not None
    return study.train_for(study.search.base).epochs


def trial_study(study: Study, name: str, params: dict[str, Any]) -> Study:
    """A one-model study of the base model with ``params`` set: a trial's (or a point's)."""
    spec = ModelSpec.model_validate(trial_point(study, params))
    out = study.model_copy(update={"models": {name: spec}, "search": None})
    out._source = study._source
    return out


def search_studies(study: Study) -> list[tuple[str, Study]]:
    """The points a search is checked at before it runs (see spec.search.search_points)."""
    assert study.search is not None
    return [(label, trial_study(study, study.search.base, values))
            for label, values in search_points(study.search)]


def validate_search(study: Study, *, memory_limit: int | None = None) -> None:
    """Build every checked point's model (shapes, outputs, memory): a SpecError names the
    search and the point."""
    from archlab.model import validate_study

    for label, point in search_studies(study):
        try:
            validate_study(point, memory_limit=memory_limit)
        except SpecError as exc:
            text = str(exc).removeprefix(f"{study.source}: ")
            raise SpecError(f"{study.source}: search, {label}: {text}") from None


def search_projection(study: Study, device: str = "cpu") -> float:
    """Projected seconds of the whole search: every trial and confirmation run at the base
    model's projected time (pruned trials take less; larger points more)."""
    from archlab.run.projection import projected_seconds

    spec = study.search
    assert spec is not None
    # a racing confirmation at its max seeds: the most it can cost
    runs = spec.trials + spec.confirm.top * (repeat_bounds(spec.confirm.repeats)[1] - 1)
    return projected_seconds(study, spec.base, device=device) * runs


def _fingerprint(study: Study) -> str:
    """What makes earlier trials comparable: base model, space, sampler, pruner, objective,
    training and data (not the trial count or the confirmation, which may grow)."""
    spec = study.search
    assert spec is not None
    cfg = spec.to_config()
    return hashlib.sha256(canonical_json({
        "base": study.models[spec.base].to_config(), "space": cfg["space"],
        "sampler": spec.sampler, "pruner": cfg["pruner"], "objective": spec.objective,
        "train": study.train.to_config(), "data": study.data.model_dump(mode="json"),
        "seed": study.seed}).encode()).hexdigest()[:16]
