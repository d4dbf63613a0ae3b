"""`archlab export` and `archlab predict`: use a trained model outside its study."""

from __future__ import annotations

import argparse
import json
from typing import Any

from archlab.cli.console import err


def _describe(info: Any) -> str:
    acc = info.metrics.get("val_accuracy")
    shown = f", val_accuracy {acc:.4f}" if isinstance(acc, float) else ""
    return f"study '{info.study}', model '{info.model}', run {info.run_id}{shown}"


def cmd_export(args: argparse.Namespace) -> int:
    from archlab.inference import load_trained
    from archlab.inference.export import SUFFIXES, export_model, format_for

    trained = load_trained(args.source, args.model)
    fmt = format_for(args.output or "", args.format)
    output = args.output or f"{trained.info.study}-{trained.info.model}{SUFFIXES[fmt]}"
    done = export_model(trained, output, format=fmt)
    err.print(f"exported {_describe(done.info)} as {done.format} to {done.path}", markup=False,
              soft_wrap=True)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from archlab.inference import load_trained
    from archlab.inference.predict import predict_images

    trained = load_trained(args.source, args.model)
    predictions = predict_images(trained, args.images, top=args.top)
    if args.format == "json":
        info = trained.info
        print(json.dumps({"study": info.study, "model": info.model, "run_id": info.run_id,
                          "predictions": [p.to_json() for p in predictions]}, indent=2))
        return 0
    err.print(f"using {_describe(trained.info)}", markup=False, soft_wrap=True)
    for p in predictions:
        ranked = ", ".join(f"{s.name} ({s.probability:.1%})" for s in p.top)
        print(f"{p.image}: {ranked}")
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, received {text!r}")
    return value


class _SourceModelImages(argparse.Action):
    """`predict SOURCE [MODEL] IMAGE...`: the second of three or more words is MODEL unless it
    is an existing path or has an image suffix (so a missing image is reported as one)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        from pathlib import Path

        from PIL import Image

        words = list(values)
        if len(words) < 2:
            parser.error("expected RUN_OR_STUDY_DIR [MODEL] IMAGE...")
        source, rest = words[0], words[1:]
        model = None
        image_suffixes = Image.registered_extensions()
        if (len(rest) > 1 and not Path(rest[0]).exists()
                and Path(rest[0]).suffix.lower() not in image_suffixes):
            model, rest = rest[0], rest[1:]
        namespace.source, namespace.model, namespace.images = source, model, rest


def add_parsers(sub: Any) -> None:
    e = sub.add_parser("export", help="write a trained model as ONNX, safetensors or TorchScript",
                       description="Export a study's best finished run of MODEL (of any model "
                       "when MODEL is left out; best = highest val_accuracy, ties: lower "
                       "val_loss), or the run of a run directory STUDY_DIR/runs/<id>. The "
                       "ONNX and TorchScript files take float32 NCHW (batch, 1, 28, 28) "
                       "preprocessed images and output softmax probabilities; see "
                       "docs/export.md.")
    e.add_argument("source", metavar="RUN_OR_STUDY_DIR")
    e.add_argument("model", nargs="?", metavar="MODEL")
    e.add_argument("--format", choices=["onnx", "safetensors", "torchscript"],
                   help="default: from the -o suffix (.onnx, .safetensors, .pt), else onnx")
    e.add_argument("-o", "--output", metavar="FILE",
                   help="default: STUDY-MODEL.onnx (or .safetensors, .pt) here")
    e.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="classify image files with a trained model",
                       usage="archlab predict [-h] [--top N] [--format {text,json}] "
                       "RUN_OR_STUDY_DIR [MODEL] IMAGE [IMAGE ...]",
                       description="Top classes of each image (PNG, JPEG, ...; any size), "
                       "prepared as the model's training images were, then with the study's "
                       "own preprocessing. A dataset of your own: its colour mode, image_size, "
                       "interpolation and crop or pad to aspect ratio; cifar10/100: RGB, "
                       "bilinear, 32x32. The "
                       "MNIST-like sets (mnist, fashion-mnist, kmnist, emnist-*) get the MNIST "
                       "recipe: grey, inverted when the background is light, cropped, fitted "
                       "into 20x20, centred by centre of mass in 28x28.")
    p.add_argument("words", nargs="+", metavar="RUN_OR_STUDY_DIR [MODEL] IMAGE...",
                   action=_SourceModelImages,
                   help="a study directory (its best run of MODEL, or of any model), a run "
                   "directory STUDY_DIR/runs/<id>, or an exported .safetensors file; then the "
                   "images")
    p.add_argument("--top", type=_positive, default=3, metavar="N",
                   help="classes shown per image (default 3)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_predict)
