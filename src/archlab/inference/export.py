"""Export a trained run to a file that runs without archlab: ONNX, safetensors or TorchScript.

Every format carries :class:`~archlab.inference.load.ModelInfo` as string metadata (ONNX
``metadata_props``, the safetensors header's ``__metadata__``, a TorchScript extra file
``archlab.json``), read back by :func:`export_metadata` without running or unpickling anything.

The input contract of the ONNX and TorchScript files: float32 NCHW ``(batch, 1, 28, 28)``,
already preprocessed as the study was (``scale``: pixel/255, light digit on black; see
``preprocessing``); the output is ``(batch, classes)`` probabilities (the softmax Keras puts
on the output layer). The safetensors file holds the weights of the bare network (it outputs
logits) plus the run's config, so ``archlab.load_trained(FILE)`` rebuilds it.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from archlab.errors import ArchlabError
from archlab.inference.load import ModelInfo, TrainedModel, load_trained

__all__ = [
    "FORMATS",
    "INPUT_NAME",
    "ONNX_OPSET",
    "ONNX_TOLERANCE",
    "OUTPUT_NAME",
    "SUFFIXES",
    "TORCHSCRIPT_EXTRA",
    "ExportError",
    "ExportFormat",
    "Exported",
    "export_metadata",
    "export_model",
    "format_for",
]

ExportFormat = Literal["onnx", "safetensors", "torchscript"]
FORMATS: tuple[ExportFormat, ...] = ("onnx", "safetensors", "torchscript")
SUFFIXES: dict[ExportFormat, str] = {"onnx": ".onnx", "safetensors": ".safetensors",
                                     "torchscript": ".pt"}
ONNX_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
TORCHSCRIPT_EXTRA = "archlab.json"


class ExportError(ArchlabError):
    """The model cannot be exported as asked (format, missing package, unwritable file)."""


@dataclass(frozen=True)
class Exported:
    """What :func:`export_model` wrote."""

    path: Path
    format: ExportFormat
    info: ModelInfo


def format_for(path: str | Path, given: str | None = None) -> ExportFormat:
    """The export format: ``given``, else the one ``path``'s suffix names, else ONNX."""
    if given is not None:
        if given not in FORMATS:
            raise ExportError(f"Expected a format among {', '.join(FORMATS)}, received "
                              f"{given!r}")
        return given  # type: ignore[return-value]
    suffix = Path(path).suffix.lower()
    by_suffix = {s: f for f, s in SUFFIXES.items()} | {".ts": "torchscript", ".pth": "torchscript"}
    return by_suffix.get(suffix, "onnx")  # type: ignore[return-value]


def export_model(source: str | Path | TrainedModel, output: str | Path, *,
                 model: str | None = None, format: ExportFormat | None = None) -> Exported:
    """Write ``source`` (a study or run directory, see :func:`archlab.load_trained`, or a loaded
    model) to ``output`` in ``format`` (default: from the suffix, else ONNX), atomically,
    metadata included."""
    trained = source if isinstance(source, TrainedModel) else load_trained(source, model)
    fmt = format_for(output, format)
    path = Path(output)
    if path.is_dir():
        raise ExportError(f"{path}: is a directory; give a file name with -o")
    writer = {"onnx": _write_onnx, "safetensors": _write_safetensors,
              "torchscript": _write_torchscript}[fmt]
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        writer(trained, tmp)
        os.replace(tmp, path)
    except ExportError as exc:
        raise ExportError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ExportError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return Exported(path, fmt, trained.info)


def _example(trained: TrainedModel, batch: int = 2) -> torch.Tensor:
    return torch.zeros((batch, *trained.info.input_shape), dtype=torch.float32)


def _write_onnx(trained: TrainedModel, path: Path) -> None:
    _torch_to_onnx(trained, path)
    _check_onnx_agrees(trained, path)


class _SumPool(nn.Module):
    """``AvgPool2d(divisor_override=d)`` as ONNX can say it: the window mean times k*k/d.
    torch's exporter drops ``divisor_override`` (the file would hold plain means)."""

    def __init__(self, pool: nn.AvgPool2d) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode,
                                 count_include_pad=True)
        k = _pair(pool.kernel_size)
        self.factor = k[0] * k[1] / float(pool.divisor_override or 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) * self.factor


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[-1]))


def _onnx_ready(trained: TrainedModel) -> nn.Module:
    """A copy of ``trained`` with what torch's exporter mistranslates rewritten."""
    ready = copy.deepcopy(trained)
    for name, module in list(ready.named_modules()):
        if (isinstance(module, nn.AvgPool2d) and module.divisor_override
                and (not any(_pair(module.padding)) or module.count_include_pad)
                and not module.ceil_mode):
            parent_name, _, child = name.rpartition(".")
            setattr(ready.get_submodule(parent_name), child, _SumPool(module))
    return ready


def _torch_to_onnx(trained: TrainedModel, path: Path) -> None:
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the `onnx` package: pip install "
                          "'archlab[export]' (or pip install onnx)") from None
    with warnings.catch_warnings():
        # The TorchScript-based exporter: it needs only `onnx` (the dynamo one needs
        # onnxscript) and writes opset 17 directly. torch marks it deprecated.
        warnings.simplefilter("ignore")
        torch.onnx.export(_onnx_ready(trained), (_example(trained),), str(path), dynamo=False,
                          opset_version=ONNX_OPSET, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], do_constant_folding=True,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    proto = onnx.load(str(path))
    info = trained.info
    proto.producer_name = "archlab"
    proto.doc_string = (f"archlab study '{info.study}', model '{info.model}', run {info.run_id}: "
                        f"input float32 NCHW {['batch', *info.input_shape]} preprocessed as "
                        f"{json.dumps(info.preprocessing)}; output softmax probabilities over "
                        f"{len(info.class_names)} classes")
    del proto.metadata_props[:]
    for key, value in info.to_metadata().items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


#: Largest difference between onnxruntime's and torch's probabilities accepted at export.
ONNX_TOLERANCE = 1e-4


def _check_onnx_agrees(trained: TrainedModel, path: Path) -> None:
    """Run the file with onnxruntime on seeded random inputs: torch's exporter silently drops
    some arguments (``divisor_override``, rewritten above, was one), and a file that computes
    something else must not be written."""
    try:
        import onnxruntime
    except ImportError:  # the `export` extra brings it; without it the file goes unchecked
        return
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((3, *trained.info.input_shape), generator=gen)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {INPUT_NAME: x.numpy()})[0])
    with torch.no_grad():
        diff = float((got - trained(x)).abs().max())
    if not diff <= ONNX_TOLERANCE:
        raise ExportError(f"torch's ONNX exporter does not translate model "
                          f"'{trained.info.model}' faithfully (onnxruntime differs from torch "
                          f"by {diff:.2g} on random inputs); export it with --format "
                          "safetensors or torchscript")


def _write_safetensors(trained: TrainedModel, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in trained.network.state_dict().items()}
    meta = trained.info.to_metadata()
    meta["output"] = "logits of the bare network (apply softmax for probabilities)"
    save_file(state, str(path), metadata=meta)


def _write_torchscript(trained: TrainedModel, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is in maintenance mode; it still works
        traced = torch.jit.trace(trained, (_example(trained),), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={
            TORCHSCRIPT_EXTRA: json.dumps(trained.info.to_metadata(), sort_keys=True)})


def export_metadata(path: str | Path) -> dict[str, str]:
    """The archlab metadata of an exported file (format from its content), read without
    running or unpickling anything."""
    p = Path(path)
    try:
        if zipfile.is_zipfile(p):  # TorchScript: a zip archive, extra files beside the code
            with zipfile.ZipFile(p) as z:
                names = [n for n in z.namelist() if n.endswith(f"/extra/{TORCHSCRIPT_EXTRA}")]
                if not names:
                    raise ExportError(f"{p}: a zip (TorchScript?) without archlab metadata")
                return dict(json.loads(z.read(names[0])))
        with open(p, "rb") as fh:  # safetensors: 8-byte header size, then a JSON header
            size = int.from_bytes(fh.read(8), "little")
            header = fh.read(size) if 0 < size <= p.stat().st_size - 8 else b""
        if header[:1] == b"{":
            return dict(json.loads(header).get("__metadata__") or {})
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ExportError(f"{p}: not an archlab export ({exc.__class__.__name__}: "
                          f"{' '.join(str(exc).split())})") from None
    return _onnx_metadata(p)


def _onnx_metadata(p: Path) -> dict[str, str]:
    try:
        import onnx
        from google.protobuf.message import DecodeError
    except ImportError:
        raise ExportError(f"{p}: reading ONNX needs the `onnx` package: pip install "
                          "'archlab[export]'") from None
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except (DecodeError, OSError, ValueError) as exc:
        raise ExportError(f"{p}: not an ONNX, safetensors or TorchScript export "
                          f"({exc.__class__.__name__})") from None
    return {prop.key: prop.value for prop in proto.metadata_props}
