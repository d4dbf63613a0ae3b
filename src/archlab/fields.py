"""Field types shared by every schema: strict numbers, names, pairs, and the frozen base.

This is the one place for field types: every float is finite (``.inf`` and ``.nan`` are
refused), every count has an upper bound that keeps it inside what torch and SQLite hold, and
names are safe as one path component.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_REPEATS",
    "MAX_SEED",
    "MAX_SIZE",
    "ConfirmRepeats",
    "Fraction",
    "ImageAxis",
    "Name",
    "NonNegFloat",
    "NonNegInt",
    "Pair",
    "PosFloat",
    "PosInt",
    "RaceRepeats",
    "Rate",
    "RepeatCount",
    "Repeats",
    "Seed",
    "Strict",
    "repeat_bounds",
]

#: The largest size (filters, units, batch size, kernel, epochs): torch indexes with 32-bit
#: integers in places; anything near this is refused by the memory estimate long before.
MAX_SIZE = 2**31 - 1
#: The largest seed: numpy's and Keras's seeds are 32-bit.
MAX_SEED = 2**32 - 1
#: Repeats of one model: each is a run with its own store row and directory.
MAX_REPEATS = 1000
#: Study and model names become directory names; most file systems allow 255 bytes.
MAX_NAME_LENGTH = 100


class Strict(BaseModel):
    """A frozen schema that refuses unknown keys (a typo is an error, never ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _pair(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, list):
        return tuple(value)
    return value


def _path_safe(name: str) -> str:
    # The pattern already keeps out '/' and every other separator; '.' and '..' are the two
    # names made of allowed characters that still point somewhere else on disk.
    if name in (".", ".."):
        raise PydanticCustomError("unsafe_name", "'{name}' is not a directory name",
                                  {"name": name})
    return name


PosInt = Annotated[int, Field(strict=True, gt=0, le=MAX_SIZE)]
NonNegInt = Annotated[int, Field(strict=True, ge=0, le=MAX_SIZE)]
Seed = Annotated[int, Field(strict=True, ge=0, le=MAX_SEED)]
RepeatCount = Annotated[int, Field(strict=True, gt=0, le=MAX_REPEATS)]


class RaceRepeats(Strict):
    """``repeats: {min: 3, max: 10, until: decided}``: a race. Every model gets ``min`` seeds,
    then seeds are added in rounds; a model significantly worse than the current best stops
    getting them, until one model is separated from the others or each has ``max``
    (docs/statistics.md)."""

    min: Annotated[int, Field(strict=True, ge=2, le=MAX_REPEATS)]
    max: Annotated[int, Field(strict=True, ge=2, le=MAX_REPEATS)]
    until: Literal["decided"]

    @model_validator(mode="after")
    def _min_at_most_max(self) -> RaceRepeats:
        if self.min > self.max:
            raise PydanticCustomError("expected_received", "Expected {expected}, received "
                                      "{received}", {"expected": "min <= max",
                                                     "received": f"min {self.min} and max "
                                                                 f"{self.max}"})
        return self


def _repeats_form(value: Any) -> str:
    return "race" if isinstance(value, dict | RaceRepeats) else "count"


#: A model's seeds: a whole number, or a race (:class:`RaceRepeats`). The value's form picks
#: the member, so an error names what is wrong with that form only.
Repeats = Annotated[Union[Annotated[RepeatCount, Tag("count")],  # noqa: UP007
                          Annotated[RaceRepeats, Tag("race")]],
                    Discriminator(_repeats_form)]


#: A search's confirmation seeds: at least 2 (one seed confirms nothing), or a race.
ConfirmRepeats = Annotated[Union[Annotated[int, Field(strict=True, ge=2, le=MAX_REPEATS),  # noqa: UP007
                                           Tag("count")],
                                 Annotated[RaceRepeats, Tag("race")]],
                           Discriminator(_repeats_form)]


def repeat_bounds(repeats: int | RaceRepeats) -> tuple[int, int]:
    """(fewest, most) seeds ``repeats`` asks for: ``(n, n)``, or a race's ``(min, max)``."""
    if isinstance(repeats, RaceRepeats):
        return repeats.min, repeats.max
    return repeats, repeats


NonNegFloat = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
PosFloat = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(strict=True, gt=0, lt=1, allow_inf_nan=False)]
Rate = Annotated[float, Field(strict=True, ge=0, lt=1, allow_inf_nan=False)]
#: An axis of the raw (images, height, width) array, as numpy counts them.
ImageAxis = Annotated[int, Field(strict=True, ge=-3, le=2)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", min_length=1,
                            max_length=MAX_NAME_LENGTH), AfterValidator(_path_safe)]
Pair = Annotated[tuple[PosInt, PosInt],
                 BeforeValidator(_pair, json_schema_input_type=Union[PosInt,  # noqa: UP007
                                                                     tuple[PosInt, PosInt]])]
