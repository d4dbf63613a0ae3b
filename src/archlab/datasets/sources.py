"""The user's own data as a study names it: a folder of images, a CSV list, an ``.npz`` of
Keras's ``load_data`` arrays, or a directory of MNIST-format IDX files.

```yaml
data:
  dataset: {folder: ./my-images, image_size: [32, 32], color_mode: rgb}
  # or {csv: ./labels.csv}, {npz: ./digits.npz}, {idx: ./kmnist}, or a built-in name
```

Argument names, meanings and defaults follow Keras's ``image_dataset_from_directory``
(``class_names``, ``color_mode``, ``image_size``, ``interpolation``, ``crop_to_aspect_ratio``,
``pad_to_aspect_ratio``). A relative path is taken from the study file's directory (from the
working directory for a study given as a dict or a string) and stored absolute.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from archlab.fields import Fraction, Pair, Seed, Strict

__all__ = [
    "BASE_DIR",
    "COLOR_MODES",
    "DEFAULT_TEST_SPLIT",
    "SOURCE_KEYS",
    "CsvSource",
    "FolderSource",
    "IdxSource",
    "ImageOptions",
    "NpzSource",
    "Source",
]

#: Keras's colour modes and the channels each gives.
COLOR_MODES: dict[str, int] = {"grayscale": 1, "rgb": 3, "rgba": 4}
#: The test split a folder or CSV without its own test set gets (stratified, seeded by the
#: source's ``seed``; both are part of the data's fingerprint).
DEFAULT_TEST_SPLIT = 0.2
#: The key that says which kind of source a mapping is.
SOURCE_KEYS = ("folder", "csv", "npz", "idx")

#: Validation context key: the directory relative source paths are taken from.
BASE_DIR = "base_dir"


def _absolute(value: str, info: ValidationInfo) -> str:
    if not value.strip():
        raise PydanticCustomError("expected_received", "Expected {expected}, received "
                                  "{received}", {"expected": "a path", "received": "''"})
    path = Path(value).expanduser()
    if not path.is_absolute():
        context = info.context if isinstance(info.context, dict) else {}
        path = Path(context.get(BASE_DIR) or os.getcwd()) / path
    return os.path.normpath(path)


#: A file or directory path, made absolute when the study is read.
SourcePath = Annotated[str, Field(min_length=1), AfterValidator(_absolute)]
ClassNames = Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=2)]


class _Source(Strict):
    """What every source has: its kind (``folder``, ``csv``, ...) and the path it names."""

    kind: ClassVar[str]

    @property
    def path(self) -> Path:
        """The file or directory the source names (absolute)."""
        return Path(getattr(self, self.kind))

    @property
    def label(self) -> str:
        """A short name for tables and run records: ``folder:my-images``."""
        return f"{self.kind}:{self.path.name}"

    def options(self) -> dict[str, Any]:
        """The source's settings without its path (what, with the content, sets the data)."""
        return self.model_dump(mode="json", exclude={self.kind})


class ImageOptions(_Source):
    """How image files become arrays, as Keras's ``image_dataset_from_directory`` says."""

    class_names: ClassNames | None = None
    color_mode: Literal["grayscale", "rgb", "rgba"] = "rgb"
    #: (height, width); None: the images' common size (an error when they differ)
    image_size: Pair | None = None
    interpolation: Literal["bilinear", "nearest", "bicubic", "area", "lanczos3"] = "bilinear"
    crop_to_aspect_ratio: bool = False
    pad_to_aspect_ratio: bool = False
    #: Held out, stratified and seeded, as the test set when the source has none of its own
    #: (no top-level train/ and test/ folders; no split column). None: 0.2 then.
    test_split: Fraction | None = None
    #: Seeds the held-out test split (Keras's ``seed``)
    seed: Seed = 0
    #: ``skip``: leave out unreadable images (counted and named on the console)
    on_bad_image: Literal["error", "skip"] = "error"

    @model_validator(mode="after")
    def _crop_or_pad(self) -> ImageOptions:
        if self.crop_to_aspect_ratio and self.pad_to_aspect_ratio:
            # Keras's own check, in its words
            raise PydanticCustomError(
                "expected_received", "Expected {expected}, received {received}",
                {"expected": "at most one of crop_to_aspect_ratio and pad_to_aspect_ratio",
                 "received": "both true"})
        return self

    @property
    def channels(self) -> int:
        return COLOR_MODES[self.color_mode]


class FolderSource(ImageOptions):
    """One sub-folder per class (``folder/cat/*.png``), or top-level ``train/`` and ``test/``
    folders each holding one sub-folder per class."""

    kind: ClassVar[str] = "folder"
    folder: SourcePath


class CsvSource(ImageOptions):
    """A CSV list with columns ``path,label`` (paths relative to the CSV's folder) and an
    optional ``split`` column (``train``/``test``)."""

    kind: ClassVar[str] = "csv"
    csv: SourcePath


class NpzSource(_Source):
    """An ``.npz`` of Keras's ``load_data`` arrays: ``x_train, y_train, x_test, y_test`` (and
    optionally ``class_names``), read with ``allow_pickle=False``."""

    kind: ClassVar[str] = "npz"
    npz: SourcePath
    class_names: ClassNames | None = None


class IdxSource(_Source):
    """A directory of MNIST-format IDX files (plain or .gz): ``*train-images*``,
    ``*train-labels*``, and ``*t10k-*`` or ``*test-*`` images and labels."""

    kind: ClassVar[str] = "idx"
    idx: SourcePath
    class_names: ClassNames | None = None
    #: EMNIST's files store each image transposed
    transpose: bool = False


Source = FolderSource | CsvSource | NpzSource | IdxSource
