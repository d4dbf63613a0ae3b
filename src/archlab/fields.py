"""Field types shared by every schema: strict numbers, names, pairs, and the frozen base."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


class Strict(BaseModel):
    """A frozen schema that refuses unknown keys (a typo is an error, never ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _pair(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, list):
        return tuple(value)
    return value


PosInt = Annotated[int, Field(strict=True, gt=0)]
NonNegInt = Annotated[int, Field(strict=True, ge=0)]
NonNegFloat = Annotated[float, Field(strict=True, ge=0)]
PosFloat = Annotated[float, Field(strict=True, gt=0)]
Fraction = Annotated[float, Field(strict=True, gt=0, lt=1)]
Rate = Annotated[float, Field(strict=True, ge=0, lt=1)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", min_length=1)]
Pair = Annotated[tuple[PosInt, PosInt],
                 BeforeValidator(_pair, json_schema_input_type=Union[PosInt,  # noqa: UP007
                                                                     tuple[PosInt, PosInt]])]
