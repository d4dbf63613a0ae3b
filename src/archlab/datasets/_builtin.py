"""The built-in datasets, one :class:`~archlab.datasets.DatasetInfo` each.

The loader (files, checksums, mirrors, system directories), the model builder (input shape,
class count), the projection (split sizes) and the study schema (the accepted dataset names)
all read :data:`DATASETS`; adding a dataset means adding one record here.

Checksums: MNIST's and Fashion-MNIST's are SHA-256s of the decompressed files (their MD5s match
the published ones); KMNIST's are the published MD5s of the served .gz files; CIFAR's and
EMNIST's are the published MD5s of their archives (only the binary and IDX versions are used,
never the Python pickles).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from archlab.datasets._record import Archive, DataFile, DatasetInfo
from archlab.errors import DataError

__all__ = ["DATASETS", "DATASET_NAMES", "dataset_info"]


def _idx_files(
    shas: tuple[str, str, str, str], train: int, test: int, h: int, w: int
) -> tuple[DataFile, ...]:
    """The four files of an MNIST-format dataset, in the order the loader returns them."""
    return (
        DataFile("train-images-idx3-ubyte", shas[0], "images", (train, h, w)),
        DataFile("train-labels-idx1-ubyte", shas[1], "labels", (train,)),
        DataFile("t10k-images-idx3-ubyte", shas[2], "images", (test, h, w)),
        DataFile("t10k-labels-idx1-ubyte", shas[3], "labels", (test,)),
    )


_DIGITS = tuple(str(d) for d in range(10))

_MNIST = DatasetInfo(
    name="mnist",
    image_shape=(28, 28, 1),
    class_names=_DIGITS,
    train_size=60000,
    test_size=10000,
    # Decompressed MD5s match those published for the original files (see the shared README).
    files=_idx_files(
        (
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
        60000, 10000, 28, 28,
    ),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    system_dirs=(Path("/usr/share/datasets/mnist"),),
    description="MNIST handwritten digits",
)

_FASHION = DatasetInfo(
    name="fashion-mnist",
    image_shape=(28, 28, 1),
    class_names=(
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    train_size=60000,
    test_size=10000,
    # Decompressed MD5s: f4a8712d7a061bf5bd6d2ca38dc4d50a, 9018921c3c673c538a1fc5bad174d6f9,
    # 8181f5470baa50b63fa0f6fddb340f0a, 15d484375f8d13e6eb1aabb0c3f46965 (the content of the
    # published .gz files whose MD5s are 8d4fb7e6..., 25c81989..., bef4ecab..., bb300cfd...).
    files=_idx_files(
        (
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
        60000, 10000, 28, 28,
    ),
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    # Debian's `dataset-fashion-mnist` package installs the four .gz files here.
    system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
    description="Zalando's Fashion-MNIST clothing images",
)

_SAMPLE = DatasetInfo(
    name="mnist-sample",
    image_shape=(28, 28, 1),
    class_names=_DIGITS,
    train_size=5000,
    test_size=1000,
    format="embedded",
    embedded=("data", "mnist_sample.npz"),  # see src/archlab/data/README.md
    description="5,000 training and 1,000 test images of MNIST, shipped inside the package",
)

# Kuzushiji-MNIST (Clanuwat et al. 2018): the published MD5s of the four served .gz files.
_KMNIST = DatasetInfo(
    name="kmnist",
    image_shape=(28, 28, 1),
    class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    train_size=60000,
    test_size=10000,
    files=(
        DataFile("train-images-idx3-ubyte", None, "images", (60000, 28, 28),
                 md5="bdb82020997e1d708af4cf47b453dcf7"),
        DataFile("train-labels-idx1-ubyte", None, "labels", (60000,),
                 md5="e144d726b3acfaa3e44228e80efcd344"),
        DataFile("t10k-images-idx3-ubyte", None, "images", (10000, 28, 28),
                 md5="5c965bf0a639b31b8f53240b1b52f4d7"),
        DataFile("t10k-labels-idx1-ubyte", None, "labels", (10000,),
                 md5="7320c461ea6c1c855c0b718fb2a4b134"),
    ),
    mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
    description="Kuzushiji-MNIST: ten cursive hiragana characters (ROIS-CODH)",
)

_CIFAR_MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
_CIFAR10_ARCHIVE = Archive("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530",
                           max_bytes=180_000_000, folder="cifar10")
_CIFAR100_ARCHIVE = Archive("cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8",
                            max_bytes=180_000_000, folder="cifar100")

_CIFAR10 = DatasetInfo(
    name="cifar10",
    image_shape=(32, 32, 3),
    class_names=("airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"),
    train_size=50000,
    test_size=10000,
    format="cifar",
    # Records of 1 label byte + 3,072 pixel bytes (the red, green and blue 32x32 planes).
    files=tuple(DataFile(f"cifar-10-batches-bin/data_batch_{i}.bin", None, "records",
                         (10000, 3073)) for i in range(1, 6))
    + (DataFile("cifar-10-batches-bin/test_batch.bin", None, "records", (10000, 3073)),),
    archive=_CIFAR10_ARCHIVE,
    mirrors=_CIFAR_MIRRORS,
    description="CIFAR-10: 32x32 colour photographs in 10 classes (Krizhevsky 2009)",
)

_CIFAR100_FINE = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)
_CIFAR100_COARSE = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
    "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
)
# Records of 1 coarse label byte, 1 fine label byte, then 3,072 pixel bytes.
_CIFAR100_FILES = (
    DataFile("cifar-100-binary/train.bin", None, "records", (50000, 3074)),
    DataFile("cifar-100-binary/test.bin", None, "records", (10000, 3074)),
)
_CIFAR100 = DatasetInfo(
    name="cifar100",
    image_shape=(32, 32, 3),
    class_names=_CIFAR100_FINE,
    train_size=50000,
    test_size=10000,
    format="cifar",
    files=_CIFAR100_FILES,
    archive=_CIFAR100_ARCHIVE,
    mirrors=_CIFAR_MIRRORS,
    label_byte=1,
    description="CIFAR-100: 32x32 colour photographs in 100 fine classes (Krizhevsky 2009)",
)
_CIFAR100_COARSE_RECORD = dataclasses.replace(
    _CIFAR100, name="cifar100-coarse", class_names=_CIFAR100_COARSE, label_byte=0,
    description="CIFAR-100 with its 20 coarse superclasses (Keras's label_mode='coarse')")

# EMNIST (Cohen et al. 2017): one zip of gzip'd IDX files for every split; the images are
# stored transposed, and the letters split numbers its classes from 1.
_EMNIST_ARCHIVE = Archive("gzip.zip", "58c8d27c78d21e728a6bc7b3cc06412e", max_bytes=600_000_000,
                          folder="emnist")
_EMNIST_MIRRORS = ("https://biometrics.nist.gov/cs_links/EMNIST/",
                   "https://www.itl.nist.gov/iaui/vip/cs_links/EMNIST/")


def _emnist(split: str, train: int, test: int, classes: tuple[str, ...], offset: int,
            description: str) -> DatasetInfo:
    stem = f"gzip/emnist-{split}"
    return DatasetInfo(
        name=f"emnist-{split}",
        image_shape=(28, 28, 1),
        class_names=classes,
        train_size=train,
        test_size=test,
        format="emnist",
        files=(DataFile(f"{stem}-train-images-idx3-ubyte.gz", None, "images", (train, 28, 28)),
               DataFile(f"{stem}-train-labels-idx1-ubyte.gz", None, "labels", (train,)),
               DataFile(f"{stem}-test-images-idx3-ubyte.gz", None, "images", (test, 28, 28)),
               DataFile(f"{stem}-test-labels-idx1-ubyte.gz", None, "labels", (test,))),
        archive=_EMNIST_ARCHIVE,
        mirrors=_EMNIST_MIRRORS,
        transpose=True,
        label_offset=offset,
        description=description,
    )


_LOWER = tuple(chr(c) for c in range(ord("a"), ord("z") + 1))
_UPPER = tuple(c.upper() for c in _LOWER)
_EMNIST_DIGITS = _emnist("digits", 240000, 40000, _DIGITS, 0,
                         "EMNIST digits: 280,000 handwritten digits from NIST SD 19")
_EMNIST_LETTERS = _emnist("letters", 124800, 20800, _LOWER, -1,
                          "EMNIST letters: 26 classes, upper and lower case merged")
# 47 classes: digits, capitals, and the 11 lower-case letters that differ from their capital.
_EMNIST_BALANCED = _emnist("balanced", 112800, 18800,
                           _DIGITS + _UPPER + tuple("abdefghnqrt"), 0,
                           "EMNIST balanced: 47 classes of digits and letters, 2,400 each")

#: The registry: every built-in dataset a study may name, by name.
DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (
    _MNIST, _FASHION, _SAMPLE, _KMNIST, _CIFAR10, _CIFAR100, _CIFAR100_COARSE_RECORD,
    _EMNIST_DIGITS, _EMNIST_LETTERS, _EMNIST_BALANCED)}

#: The accepted names in registry order (the study schema's `dataset` choices).
DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    """The record of dataset ``name``; a one-line :class:`DataError` naming the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None
