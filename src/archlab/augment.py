"""Data augmentation: Keras 3's RandomTranslation, RandomRotation and RandomZoom.

The spec classes take Keras's arguments with Keras's defaults and checks. The transforms run
on the batch's device, only while training (as Keras's preprocessing layers do): each one draws
its random values per image and gives a 3x3 matrix that maps an output pixel (x = column,
y = row, pixel centres at integers) to the input pixel it samples, exactly Keras's matrix.
Consecutive transforms that sample alike (same fill mode, interpolation and fill value) are
composed into one matrix, so a batch costs one ``affine_grid`` + ``grid_sample``: the same
geometry as Keras's layer after layer, resampled once instead of once per layer.

Fill modes as Keras's (scipy's) ``map_coordinates`` applies them to each neighbour of a sample
point: ``reflect`` (d c b a | a b c d | d c b a) is grid_sample's reflection without aligned
corners, ``nearest`` its border padding, ``constant`` zero padding of ``x - fill_value``,
``wrap`` coordinates taken modulo the size on a circularly padded image.

The random values come from :class:`Augmenter`'s own generators, seeded from the run's seed (a
layer's ``seed`` gives it a generator of its own, as in Keras), so augmentation never shifts
the shuffling or dropout streams, and their state goes into the checkpoint.
"""

from __future__ import annotations

import hashlib
import math
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field, field_validator
from pydantic_core import PydanticCustomError

from archlab.fields import Seed, Strict
from archlab.lazy import F, torch

__all__ = [
    "AUGMENTATIONS",
    "Augmentation",
    "Augmenter",
    "Factor",
    "FillMode",
    "FiniteFloat",
    "Interpolation",
    "RandomRotation",
    "RandomTranslation",
    "RandomZoom",
    "factor_range",
    "resample",
]

FillMode = Literal["reflect", "wrap", "constant", "nearest"]
Interpolation = Literal["nearest", "bilinear"]
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
#: Keras's factor: a number f (the range [-|f|, |f|]) or a [lower, upper] pair.


def _factor_form(value: Any) -> Any:
    pair = isinstance(value, list | tuple) and len(value) == 2
    if not pair and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise PydanticCustomError("union_form", "Expected {form}", {
            "form": "a number or a [lower, upper] pair"})
    return tuple(value) if pair else value


Factor = Annotated[Union[FiniteFloat, tuple[FiniteFloat, FiniteFloat]],  # noqa: UP007
                   BeforeValidator(_factor_form)]


def factor_range(factor: float | tuple[float, float]) -> tuple[float, float]:
    """(lower, upper) as Keras reads a factor: a pair sorted, a number as [-|f|, |f|]."""
    if isinstance(factor, tuple):
        lower, upper = sorted(factor)
        return lower, upper
    return -abs(factor), abs(factor)


def _check(factor: Any, low: float, high: float, low_open: bool = False) -> Any:
    """Keras's factor check: every number in [low, high] ((low, high] for RandomZoom)."""
    if factor is None:
        return factor
    numbers = factor if isinstance(factor, tuple) else (factor,)
    if any(x > high or x < low or (low_open and x == low) for x in numbers):
        bound = "(" if low_open else "["
        raise PydanticCustomError("union_form", "Expected {form}", {
            "form": f"a number or a [lower, upper] pair in {bound}{low:g}, {high:g}]"})
    return factor


class _Augmentation(Strict):
    type: str
    fill_mode: FillMode = "reflect"
    interpolation: Interpolation = "bilinear"
    seed: Seed | None = None
    fill_value: FiniteFloat = 0.0

    def to_config(self) -> dict[str, Any]:
        """The YAML form ``{RandomRotation: {args}}`` (Keras's defaults left out)."""
        args = self.model_dump(mode="json", exclude_defaults=True, exclude={"type"})
        return {self.type: {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}}

    @property
    def sampling(self) -> tuple[str, str, float]:
        """What the resampling depends on: transforms alike in this compose into one."""
        return (self.fill_mode, self.interpolation, self.fill_value)

    def matrices(self, n: int, height: int, width: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` (3, 3) float64 matrices mapping output pixels to input pixels, Keras's."""
        raise NotImplementedError


def _uniform(n: int, bounds: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    lower, upper = bounds
    return lower + (upper - lower) * torch.rand(n, generator=gen, dtype=torch.float64)


def _eye(n: int) -> torch.Tensor:
    return torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)


class RandomTranslation(_Augmentation):
    """keras.layers.RandomTranslation: shift by a fraction of the height and the width
    (positive: down and right)."""

    type: Literal["RandomTranslation"] = "RandomTranslation"
    height_factor: Factor
    width_factor: Factor

    @field_validator("height_factor", "width_factor")
    @classmethod
    def _factors(cls, v: Any) -> Any:
        return _check(v, -1.0, 1.0)

    def matrices(self, n: int, height: int, width: int, gen: torch.Generator) -> torch.Tensor:
        dy = _uniform(n, factor_range(self.height_factor), gen) * height  # Keras: height first
        dx = _uniform(n, factor_range(self.width_factor), gen) * width
        m = _eye(n)
        m[:, 0, 2], m[:, 1, 2] = -dx, -dy
        return m


class RandomRotation(_Augmentation):
    """keras.layers.RandomRotation: rotate about the image centre by ``factor · 2π``
    (positive: counter-clockwise)."""

    type: Literal["RandomRotation"] = "RandomRotation"
    factor: Factor

    @field_validator("factor")
    @classmethod
    def _factor(cls, v: Any) -> Any:
        return _check(v, -1.0, 1.0)

    def matrices(self, n: int, height: int, width: int, gen: torch.Generator) -> torch.Tensor:
        angle = _uniform(n, factor_range(self.factor), gen) * 360.0 * (math.pi / 180.0)
        cx, cy = 0.5 * (width - 1), 0.5 * (height - 1)
        cos, sin = torch.cos(angle), torch.sin(angle)
        m = _eye(n)
        m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = cos, -sin, cx - cx * cos + cy * sin
        m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = sin, cos, cy - cx * sin - cy * cos
        return m


class RandomZoom(_Augmentation):
    """keras.layers.RandomZoom: scale about the centre by ``1 + factor`` (Keras 3: a positive
    factor zooms out, a negative one in); ``width_factor`` null keeps the aspect ratio."""

    type: Literal["RandomZoom"] = "RandomZoom"
    height_factor: Factor
    width_factor: Factor | None = None

    @field_validator("height_factor", "width_factor")
    @classmethod
    def _factors(cls, v: Any) -> Any:
        return _check(v, -1.0, 1.0, low_open=True)  # Keras: a zoom factor above -1

    def matrices(self, n: int, height: int, width: int, gen: torch.Generator) -> torch.Tensor:
        zy = 1.0 + _uniform(n, factor_range(self.height_factor), gen)
        zx = zy if self.width_factor is None else 1.0 + _uniform(
            n, factor_range(self.width_factor), gen)
        m = _eye(n)
        m[:, 0, 0], m[:, 0, 2] = zx, (width - 1.0) / 2.0 * (1.0 - zx)
        m[:, 1, 1], m[:, 1, 2] = zy, (height - 1.0) / 2.0 * (1.0 - zy)
        return m


AUGMENTATIONS: dict[str, type[_Augmentation]] = {
    c.model_fields["type"].default: c for c in (RandomTranslation, RandomRotation, RandomZoom)}


def _augmentation_item(value: Any) -> Any:
    """``{RandomRotation: {factor: 0.1}}``, as a layer is written in a model's layers."""
    if isinstance(value, dict) and len(value) == 1:
        (name, args), = value.items()
        if name not in AUGMENTATIONS:
            raise PydanticCustomError("union_form", "Expected {form}", {
                "form": f"an augmentation layer ({', '.join(AUGMENTATIONS)})"})
        if not isinstance(args, dict):
            raise PydanticCustomError("union_form", "Expected {form}", {
                "form": f"a mapping of arguments for {name}"})
        return {"type": name, **args}
    if isinstance(value, _Augmentation):
        return value
    raise PydanticCustomError("union_form", "Expected {form}", {
        "form": "an augmentation layer such as '{RandomRotation: {factor: 0.1}}'"})


Augmentation = Annotated[
    Annotated[Union[RandomTranslation, RandomRotation, RandomZoom],  # noqa: UP007
              Field(discriminator="type")],
    # The JSON Schema shows what users write: {RandomRotation: {...}}.
    BeforeValidator(_augmentation_item, json_schema_input_type=Annotated[
        dict[Literal["RandomTranslation", "RandomRotation", "RandomZoom"], dict[str, Any]],
        Field(min_length=1, max_length=1)]),
]


# ---------------------------------------------------------------------------------------------
# The torch side


def resample(x: torch.Tensor, m: torch.Tensor, fill_mode: str, interpolation: str,
             fill_value: float) -> torch.Tensor:
    """Sample ``x`` (N, C, H, W) at ``m`` (N, 3, 3: output pixel -> input pixel) as Keras's
    ``affine_transform`` does; one affine_grid + grid_sample."""
    n, _, h, w = x.shape
    # Normalized coordinates (align_corners=False): u = (2p + 1) / size - 1.
    norm = torch.tensor([[2.0 / w, 0.0, 1.0 / w - 1.0], [0.0, 2.0 / h, 1.0 / h - 1.0],
                         [0.0, 0.0, 1.0]], dtype=torch.float64)
    theta = norm @ m @ torch.linalg.inv(norm)
    grid = F.affine_grid(theta[:, :2].to(x.device, x.dtype), [n, 1, h, w], align_corners=False)
    mode = "bilinear" if interpolation == "bilinear" else "nearest"
    if fill_mode == "wrap":
        # Keras wraps each neighbour's index modulo the size: wrap the point into [0, size)
        # and sample an image padded by one wrapped pixel on each side.
        size = torch.tensor([w, h], device=x.device, dtype=x.dtype)
        pixel = torch.remainder(((grid + 1) * size - 1) / 2, size)
        grid = (2 * (pixel + 1) + 1) / (size + 2) - 1
        padded = F.pad(x, (1, 1, 1, 1), mode="circular")
        return F.grid_sample(padded, grid, mode=mode, padding_mode="zeros", align_corners=False)
    if fill_mode == "constant":
        # Neighbours outside the image count as fill_value: zeros padding of x - fill_value.
        out = F.grid_sample(x - fill_value, grid, mode=mode, padding_mode="zeros",
                            align_corners=False)
        return out + fill_value
    padding = "reflection" if fill_mode == "reflect" else "border"
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=False)


def _derived_seed(seed: int) -> int:
    """The augmentation stream's seed: the run's seed hashed, so it is not the shuffling
    stream (seeded with the run's seed itself) replayed."""
    return int.from_bytes(hashlib.sha256(f"{seed}/augmentation".encode()).digest()[:8], "big")


class Augmenter:
    """The training-time augmentation of one run: ``augmenter(xb)`` transforms a batch."""

    def __init__(self, specs: list[Any], seed: int) -> None:
        self.specs = list(specs)
        self.generators = [torch.Generator().manual_seed(_derived_seed(seed))]
        # A layer with its own `seed` draws from its own generator, as a Keras layer does.
        self.owner: list[int] = []
        for spec in self.specs:
            if spec.seed is None:
                self.owner.append(0)
            else:
                self.owner.append(len(self.generators))
                self.generators.append(torch.Generator().manual_seed(spec.seed))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        # Draws on the CPU (the same numbers on every device); one resampling per run of
        # transforms that sample alike, their matrices composed in Keras's layer order.
        i = 0
        while i < len(self.specs):
            sampling = self.specs[i].sampling
            m = _eye(n)
            while i < len(self.specs) and self.specs[i].sampling == sampling:
                spec = self.specs[i]
                m = m @ spec.matrices(n, h, w, self.generators[self.owner[i]])
                i += 1
            if not torch.equal(m, _eye(n)):  # a zero factor leaves the images as they are
                x = resample(x, m, *sampling)
        return x

    def get_state(self) -> torch.Tensor:
        """Every generator's state, stacked (what the checkpoint stores)."""
        return torch.stack([g.get_state() for g in self.generators])

    def set_state(self, state: torch.Tensor) -> None:
        if state.shape[0] != len(self.generators):
            raise ValueError(f"augmentation state for {state.shape[0]} generators, "
                             f"expected {len(self.generators)}")
        for g, s in zip(self.generators, state, strict=True):
            g.set_state(s.contiguous())
