"""`archlab export`: the best run of a model, as ONNX (checked with onnxruntime), safetensors
and TorchScript, each carrying its metadata."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import archlab
from archlab import ModelInfo, export_metadata, export_model, load_trained, preprocess_images
from archlab.cli import main
from tests.inference.conftest import Trained

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _best_of(directory: Path, model: str | None = None) -> archlab.RunRecord:
    with archlab.Store(directory) as store:
        runs = [r for r in store.runs() if r.status == "finished"
                and (model is None or r.model == model)]
    return max(runs, key=lambda r: (r.metrics["val_accuracy"], -r.metrics["val_loss"]))


@pytest.fixture(scope="module")
def test_images(sample: archlab.RawDataset) -> np.ndarray:
    return sample.x_test[..., 0][:100]


def test_onnx_equals_torch_on_100_test_images(quickstart: Trained, tmp_path: Path,
                                              test_images: np.ndarray) -> None:
    out = tmp_path / "conv.onnx"
    assert main(["export", str(quickstart.directory), quickstart.conv, "--format", "onnx",
                 "-o", str(out)]) == 0
    trained = load_trained(quickstart.directory, quickstart.conv)
    x = preprocess_images(test_images, trained, mnist_style=False)
    with torch.no_grad():
        expected = trained(x).numpy()
    assert np.allclose(expected.sum(1), 1.0, atol=1e-5)  # probabilities, not logits

    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) >= 17
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert inp.type == "tensor(float)" and inp.shape[1:] == [1, 28, 28]
    assert isinstance(inp.shape[0], str) and isinstance(outp.shape[0], str)  # dynamic batch
    got = session.run(None, {inp.name: x.numpy()})[0]
    assert got.shape == (100, 10)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    one = session.run(None, {inp.name: x[:1].numpy()})[0]  # another batch size, same graph
    np.testing.assert_allclose(one, expected[:1], rtol=0, atol=1e-5)
    # The model is worth exporting: it classifies most of these real test images.
    assert (got.argmax(1) == np.asarray(archlab.load_dataset("mnist-sample").y_test[:100])
            ).mean() > 0.3


def test_the_best_finished_run_is_exported(quickstart: Trained, tmp_path: Path,
                                           tiny_config: dict) -> None:
    quickstart_dir = quickstart.directory
    tiny_config["train"]["epochs"] = 1
    tiny = tmp_path / "tiny"
    archlab.run_study(archlab.parse_study(tiny_config), tiny, repeats=3, threads=1, device="cpu")
    with archlab.Store(tiny) as store:
        assert len({r.metrics["val_accuracy"] for r in store.runs(models=["mlp"])}) > 1
    for model in ("mlp", "cnn", None):
        best = _best_of(tiny, model)
        done = export_model(tiny, tmp_path / f"{model}.onnx", model=model)
        assert (done.info.run_id, done.info.model) == (best.run_id, best.model)
        assert done.info.metrics["val_accuracy"] == best.metrics["val_accuracy"]
    for model in (*quickstart.models, None):
        best = _best_of(quickstart_dir, model)
        done = export_model(quickstart_dir, tmp_path / f"{model}.onnx", model=model)
        assert (done.info.run_id, done.info.model) == (best.run_id, best.model)
        assert done.info.metrics["val_accuracy"] == best.metrics["val_accuracy"]
    # A run directory exports that run, whichever is best.
    with archlab.Store(quickstart_dir) as store:
        worst = min(store.runs(), key=lambda r: r.metrics["val_accuracy"])
    run_dir = quickstart_dir / "runs" / worst.run_id
    assert main(["export", str(run_dir), "-o", str(tmp_path / "run.onnx")]) == 0
    assert export_metadata(tmp_path / "run.onnx")["run_id"] == worst.run_id


@pytest.mark.parametrize("fmt", ["onnx", "safetensors", "torchscript"])
def test_metadata_round_trips(quickstart: Trained, tmp_path: Path, fmt: str) -> None:
    model = quickstart.models[0]
    trained = load_trained(quickstart.directory, model)
    done = export_model(trained, tmp_path / "model.bin", format=fmt)  # type: ignore[arg-type]
    meta = export_metadata(done.path)
    assert ModelInfo.from_metadata(meta) == trained.info
    assert meta["study"] == "quickstart" and meta["model"] == model
    assert meta["run_id"] == _best_of(quickstart.directory, model).run_id
    assert json.loads(meta["class_names"]) == [str(d) for d in range(10)]
    assert json.loads(meta["preprocessing"]) == "scale"
    assert json.loads(meta["input_shape"]) == ["batch", 1, 28, 28]
    assert trained.info.dataset == meta["dataset"] == "mnist-sample"


def test_torchscript_file_runs_with_any_batch(quickstart: Trained, tmp_path: Path,
                                              test_images: np.ndarray) -> None:
    out = tmp_path / "m.pt"
    assert main(["export", str(quickstart.directory), quickstart.conv, "-o",
                 str(out)]) == 0  # the format from the suffix
    trained = load_trained(quickstart.directory, quickstart.conv)
    x = preprocess_images(test_images, trained, mnist_style=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in torch
        scripted = torch.jit.load(str(out))
    with torch.no_grad():
        np.testing.assert_allclose(scripted(x).numpy(), trained(x).numpy(), atol=1e-6)
        assert scripted(x[:3]).shape == (3, 10)


def test_safetensors_export_is_plain_tensors_and_loads_back(quickstart: Trained,
                                                            tmp_path: Path,
                                                            test_images: np.ndarray) -> None:
    out = tmp_path / "m.safetensors"
    assert main(["export", str(quickstart.directory), quickstart.conv, "-o", str(out)]) == 0
    raw = out.read_bytes()
    header = raw[8:8 + int.from_bytes(raw[:8], "little")]
    assert json.loads(header)["__metadata__"]["model"] == quickstart.conv  # JSON, no pickle
    again, trained = load_trained(out), load_trained(quickstart.directory, quickstart.conv)
    assert again.info == trained.info
    x = preprocess_images(test_images, trained, mnist_style=False)
    with torch.no_grad():
        assert torch.equal(again(x), trained(x))


def test_export_names_the_file_from_study_and_model(quickstart: Trained, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["export", str(quickstart.directory), quickstart.mlp, "--format",
                 "safetensors"]) == 0
    assert (tmp_path / f"quickstart-{quickstart.mlp}.safetensors").is_file()


@pytest.mark.parametrize("argv, message", [
    (["{q}", "nope"], "Expected a model of study 'quickstart' ({models}), received 'nope'"),
    (["{q}/runs"], "not a study directory"),
    (["{tmp}/absent"], "no such directory"),
    (["{q}", "{mlp}", "-o", "{tmp}"], "is a directory"),
])
def test_export_errors_are_one_line(quickstart: Trained, tmp_path: Path, capsys, argv,
                                    message) -> None:
    names = {"q": quickstart.directory, "tmp": tmp_path, "mlp": quickstart.mlp,
             "models": ", ".join(sorted(quickstart.models))}
    args = [a.format(**names) for a in argv]
    message = message.format(**names)
    assert main(["export", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_a_run_directory_of_another_model_is_refused(quickstart: Trained, capsys) -> None:
    run = _best_of(quickstart.directory, quickstart.conv)
    run_dir = quickstart.directory / "runs" / run.run_id
    assert main(["export", str(run_dir), quickstart.mlp]) == 2
    assert f"is of model '{quickstart.conv}', not '{quickstart.mlp}'" in capsys.readouterr().err


EVERY_LAYER = {
    "name": "layers",
    "data": {"dataset": "mnist-sample"},
    "models": {
        "branchy": {"layers": [
            {"Conv2D": {"filters": 6, "kernel_size": 4, "padding": "same", "strides": 2,
                        "activation": "gelu"}},  # TF-style asymmetric same padding
            "BatchNormalization",
            {"Concatenate": {"branches": [
                [],
                [{"Conv2D": {"filters": 4, "kernel_size": 1, "activation": "selu"}}],
                [{"MaxPooling2D": {"pool_size": 3, "strides": 1, "padding": "same"}}],
                [{"AveragePooling2D": {"pool_size": 3, "strides": 1, "padding": "same"}}],
            ]}},
            {"Activation": {"activation": "softsign"}},
            "GlobalAveragePooling2D",
            {"Dropout": {"rate": 0.5}},
            {"Dense": {"units": 10, "activation": "softmax"}},
        ]},
        "pools": {"layers": [
            {"Conv2D": {"filters": 3, "kernel_size": 3, "activation": "tanh"}},
            {"AveragePooling2D": {"pool_size": 2}},
            {"AveragePooling2D": {"pool_size": 2, "padding": "same"}},  # 13x13 -> 7x7: pads
            "GlobalMaxPooling2D",
            {"Dense": {"units": 10, "activation": "softmax"}},
        ]},
        "issue10": {"layers": [
            {"Convolution2D": {"filters": 4, "kernel_size": 3, "strides": 2}},  # 13x13
            {"ZeroPadding2D": {"padding": [[0, 1], [2, 1]]}},  # 14x16
            {"Cropping2D": {"cropping": [1, 2]}},  # 12x12
            {"UpSampling2D": {"size": 2}},  # 24x24
            {"MaxPool2D": {"pool_size": 2}},  # 12x12
            {"DepthwiseConv2D": {"kernel_size": 3, "depth_multiplier": 2, "padding": "same"}},
            {"SeparableConv2D": {"filters": 4, "kernel_size": 3, "padding": "same",
                                 "dilation_rate": 2}},
            {"Conv2D": {"filters": 4, "kernel_size": 2, "padding": "same", "groups": 2,
                        "dilation_rate": 2}},
            {"ReLU": {"max_value": 0.5, "negative_slope": 0.1, "threshold": 0.05}},
            {"Add": {"branches": [[], [{"Conv2D": {"filters": 4, "kernel_size": 3,
                                                   "padding": "same"}}, "LeakyReLU"]]}},
            {"Subtract": {"branches": [["PReLU"], [{"PReLU": {"shared_axes": [1, 2]}}]]}},
            {"Multiply": {"branches": [[], ["ELU"]]}},
            {"Maximum": {"branches": [[], [{"AvgPool2D": {"pool_size": 3, "strides": 1,
                                                          "padding": "same"}}]]}},
            {"Average": {"branches": [[], ["Softmax"]]}},
            "LayerNormalization",
            {"SpatialDropout2D": {"rate": 0.2}},
            {"GaussianNoise": {"stddev": 0.1}},
            {"Reshape": {"target_shape": [6, 24, 4]}},
            "GlobalAvgPool2D",
            {"Dense": {"units": 10}},
            "Softmax",
        ]},
    },
}


def _untrained(network: torch.nn.Module, model: str) -> archlab.TrainedModel:
    info = ModelInfo(study="layers", model=model, run_id="-", dataset="mnist-sample",
                     preprocessing="scale", class_names=tuple("0123456789"),
                     input_shape=(1, 28, 28))
    return archlab.TrainedModel(network, info)


@pytest.mark.parametrize("model", ["branchy", "pools", "issue10"])
def test_every_layer_kind_exports_to_onnx(tmp_path: Path, model: str) -> None:
    study = archlab.parse_study(EVERY_LAYER)
    network = archlab.build_model(study, model, seed=0).module
    network.train()
    with torch.no_grad():  # BatchNormalization statistics that are not 0 and 1
        network(torch.rand(32, 1, 28, 28))
    trained = _untrained(network, model)
    path = export_model(trained, tmp_path / "m.onnx").path
    x = torch.rand(5, 1, 28, 28)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0],
                                   trained(x).numpy(), rtol=0, atol=1e-5)


def test_an_unfaithful_onnx_graph_is_refused(quickstart: Trained, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    # An exporter that computes something else (as torch's did for AveragePooling2D 'same',
    # dropping divisor_override): the file is checked with onnxruntime and not kept.
    real_export = torch.onnx.export

    def halving_export(model, args, *rest, **kwargs):
        class Half(torch.nn.Module):
            def forward(self, x):
                return model(x) * 0.5

        return real_export(Half(), args, *rest, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", halving_export)
    out = tmp_path / "m.onnx"
    assert main(["export", str(quickstart.directory), quickstart.mlp, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}: torch's ONNX exporter does not translate model "
                          f"'{quickstart.mlp}' faithfully (onnxruntime differs from torch by 0.")
    assert err.rstrip().endswith("export it with --format safetensors or torchscript")
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left behind
