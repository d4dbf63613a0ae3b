"""Using a trained model: load it (safetensors only), export it (ONNX, safetensors,
TorchScript) and classify real images with the study's own preprocessing."""

from archlab.inference.images import (
    ImageError,
    load_images,
    mnist_format,
    preprocess_images,
    read_image,
)
from archlab.inference.load import ModelInfo, TrainedModel, find_run, load_trained

__all__ = [
    "ImageError",
    "ModelInfo",
    "TrainedModel",
    "find_run",
    "load_images",
    "load_trained",
    "mnist_format",
    "preprocess_images",
    "read_image",
]
