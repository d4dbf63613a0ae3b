"""Study-file validation: every malformed spec is one line on stderr naming the place, exit 2.

Each case is a study a new user could plausibly write. The CLI must reject it before any
training with exactly one line: ``error: <file>: model 'm', layer N (Type), field 'f': ...``
(plus the input shape for shape errors), and no traceback.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from archlab import SpecError, load_study, parse_study, validate_study, zoo_names
from archlab.cli import main
from archlab.layers import LAYER_TYPES

HEAD = """\
name: first-study
data:
  dataset: mnist-sample
  validation: {split: 0.1}
train:
  optimizer: adam
  batch_size: 64
  epochs: 2
"""

OUTPUT = """\
- Flatten
- Dense: {units: 10, activation: softmax}
"""


def with_layers(*layers: str, model: str = "cnn", head: str = HEAD) -> str:
    """A study whose one model ``model`` has ``layers`` (blocks of YAML list items)."""
    body = textwrap.indent("".join(textwrap.dedent(part) for part in layers), " " * 6)
    return f"{head}models:\n  {model}:\n    layers:\n{body}"


def with_head(head: str, *, layers: str = OUTPUT) -> str:
    """A study with a changed head (name/data/train) and a valid model ``mlp``."""
    return with_layers(layers, model="mlp", head=textwrap.dedent(head))


CNN = "'cnn'"

# (id, study text, substrings the one-line error must contain)
MALFORMED: list[tuple[str, str, list[str]]] = [
    # --- unknown layers and arguments --------------------------------------------------------
    ("argument-typo", with_layers("""\
        - Conv2D: {filters: 32, kernal_size: 3, activation: relu}
        """, OUTPUT), [CNN, "layer 1 (Conv2D)", "Unknown argument 'kernal_size'",
                       "did you mean 'kernel_size'?"]),
    ("argument-of-another-layer", with_layers("""\
        - Flatten
        - Dense: {filters: 10, activation: softmax}
        """), [CNN, "layer 2 (Dense)", "Unknown argument 'filters'", "did you mean 'units'?"]),
    ("keras-input-shape", with_layers("""\
        - Conv2D: {filters: 32, kernel_size: 3, input_shape: [28, 28, 1]}
        """, OUTPUT), [CNN, "layer 1 (Conv2D)", "'input_shape'", "from the dataset"]),
    ("layer-name-case", with_layers("""\
        - Conv2d: {filters: 32, kernel_size: 3}
        """, OUTPUT), [CNN, "layer 1", "Unknown layer 'Conv2d'", "did you mean 'Conv2D'?"]),
    ("layer-name-lowercase", with_layers("""\
        - flatten
        - Dense: {units: 10, activation: softmax}
        """), [CNN, "layer 1", "Unknown layer 'flatten'", "did you mean 'Flatten'?"]),
    ("layer-keras-alias", with_layers("""\
        - Conv2D: {filters: 32, kernel_size: 3}
        - MaxPool: {pool_size: 2}
        """, OUTPUT), [CNN, "layer 2", "Unknown layer 'MaxPool'",
                       "did you mean 'MaxPooling2D'?"]),
    ("activation-as-layer", with_layers("""\
        - Conv2D: {filters: 32, kernel_size: 3}
        - Tanh
        """, OUTPUT), [CNN, "layer 2", "Unknown layer 'Tanh'", "Activation: {activation: tanh}"]),
    ("layer-unknown", with_layers("""\
        - LSTM: {units: 10}
        """, OUTPUT), [CNN, "layer 1", "Unknown layer 'LSTM'; expected one of Conv2D, Dense,"]),
    ("input-layer", with_layers("""\
        - Input: {shape: [28, 28, 1]}
        """, OUTPUT), [CNN, "layer 1", "Unknown layer 'Input'", "remove"]),
    ("python-call", with_layers("""\
        - Flatten
        - Dense(10, activation='softmax')
        """), [CNN, "layer 2", "Unknown layer 'Dense(10", "Python call"]),
    # --- wrong types and values ---------------------------------------------------------------
    ("filters-quoted", with_layers("""\
        - Conv2D: {filters: "32", kernel_size: 3}
        """, OUTPUT), [CNN, "layer 1 (Conv2D)", "field 'filters'",
                       "Expected a positive integer, received '32'", "without quotes"]),
    ("filters-float", with_layers("""\
        - Conv2D: {filters: 3.5, kernel_size: 3}
        """, OUTPUT), [CNN, "layer 1 (Conv2D)", "field 'filters'",
                       "Expected a positive integer, received 3.5"]),
    ("filters-negative", with_layers("""\
        - Conv2D: {filters: -1, kernel_size: 3}
        """, OUTPUT), [CNN, "layer 1 (Conv2D)", "field 'filters'",
                       "Expected a positive integer, received -1"]),
    ("kernel-size-one-item", with_layers("""\
        - Conv2D: {filters: 32, kernel_size: [3]}
        """, OUTPUT), [CNN, "layer 1 (Conv2D)", "field 'kernel_size'",
                       "Expected a positive integer or [height, width], received [3]"]),
    ("kernel-size-tuple", with_layers("""\
        - Conv2D:
            filters: 32
            kernel_size: (3, 3)
        """, OUTPUT), [CNN, "layer 1 (Conv2D)", "field 'kernel_size'", "received '(3, 3)'",
                       "write [3, 3]"]),
    ("strides-zero", with_layers("""\
        - Conv2D: {filters: 32, kernel_size: 3, strides: 0}
        """, OUTPUT), [CNN, "layer 1 (Conv2D)", "field 'strides'", "received 0"]),
    ("padding-typo", with_layers("""\
        - Conv2D: {filters: 32, kernel_size: 3, padding: smae}
        """, OUTPUT), [CNN, "layer 1 (Conv2D)", "field 'padding'",
                       "Expected 'valid' or 'same', received 'smae'", "did you mean 'same'?"]),
    ("activation-case", with_layers("""\
        - Conv2D: {filters: 32, kernel_size: 3, activation: Relu}
        """, OUTPUT), [CNN, "layer 1 (Conv2D)", "field 'activation'", "received 'Relu'",
                       "did you mean 'relu'?"]),
    ("activation-unknown", with_layers("""\
        - Conv2D: {filters: 32, kernel_size: 3, activation: leakyrelu}
        """, OUTPUT), [CNN, "layer 1 (Conv2D)", "field 'activation'",
                       "Expected an activation (linear, relu,", "received 'leakyrelu'"]),
    ("initializer-typo", with_layers("""\
        - Conv2D: {filters: 32, kernel_size: 3, kernel_initializer: he_norml}
        """, OUTPUT), [CNN, "layer 1 (Conv2D)", "field 'kernel_initializer'",
                       "did you mean 'he_normal'?"]),
    ("regularizer-bare-number", with_layers("""\
        - Conv2D: {filters: 32, kernel_size: 3, kernel_regularizer: 0.01}
        """, OUTPUT), [CNN, "layer 1 (Conv2D)", "field 'kernel_regularizer'", "received 0.01",
                       "{l2: 0.01}"]),
    ("use-bias-not-bool", with_layers("""\
        - Conv2D: {filters: 32, kernel_size: 3, use_bias: maybe}
        """, OUTPUT), [CNN, "layer 1 (Conv2D)", "field 'use_bias'",
                       "Expected true or false, received 'maybe'"]),
    ("dropout-rate-above-1", with_layers("""\
        - Flatten
        - Dropout: {rate: 1.5}
        - Dense: {units: 10, activation: softmax}
        """), [CNN, "layer 2 (Dropout)", "field 'rate'", "Expected a number >= 0 and < 1",
               "received 1.5"]),
    ("dropout-without-rate", with_layers("""\
        - Flatten
        - Dropout
        - Dense: {units: 10, activation: softmax}
        """), [CNN, "layer 2 (Dropout)", "Missing required argument 'rate'"]),
    ("dense-bare-value", with_layers("""\
        - Flatten
        - Dense: 10
        """), [CNN, "layer 2", "Dense", "received 10", "did you mean 'Dense: {units: 10}'?"]),
    ("dense-units-text", with_layers("""\
        - Flatten
        - Dense: {units: ten, activation: softmax}
        """), [CNN, "layer 2 (Dense)", "field 'units'", "received 'ten'"]),
    # --- list structure -----------------------------------------------------------------------
    ("two-layers-one-item", with_layers("""\
        - Conv2D: {filters: 32, kernel_size: 3}
          MaxPooling2D: {pool_size: 2}
        """, OUTPUT), [CNN, "layer 1", "one layer per list item", "Conv2D, MaxPooling2D",
                       "'- '"]),
    ("empty-list-item", with_layers("""\
        - Conv2D: {filters: 32, kernel_size: 3}
        -
        """, OUTPUT), [CNN, "layer 2", "received an empty list item"]),
    ("layers-as-mapping", HEAD + """\
models:
  mlp:
    layers:
      Flatten:
      Dense: {units: 10, activation: softmax}
""", ["'mlp'", "field 'layers'", "Expected a list of layers", "'- '"]),
    ("layers-empty", HEAD + """\
models:
  mlp:
    layers: []
""", ["'mlp'", "field 'layers'", "Expected at least 1 layer, received none"]),
    ("model-without-layers-key", HEAD + """\
models:
  mlp:
    - Flatten
    - Dense: {units: 10, activation: softmax}
""", ["'mlp'", "Expected a model (a mapping with 'layers')", "put the layers under 'layers:'"]),
    ("models-empty", HEAD + "models: {}\n",
     ["field 'models'", "Expected at least 1 model, received none"]),
    ("models-key-typo", with_head(HEAD).replace("models:", "model:"),
     ["Unknown field 'model'", "did you mean 'models'?"]),
    ("model-name-with-space", with_layers(OUTPUT, model="my model"),
     ["model 'my model'", "Expected a model name made of letters, digits"]),
    # --- training and optimizer ---------------------------------------------------------------
    ("optimizer-adamw", with_head(HEAD.replace("optimizer: adam", "optimizer: adamw")),
     ["field 'train.optimizer'", "Unknown optimizer 'adamw'", "did you mean 'adam'?"]),
    ("optimizer-adamm-with-args", with_head(HEAD.replace(
        "optimizer: adam", "optimizer: {name: adamm, learning_rate: 0.001}")),
     ["field 'train.optimizer'", "Unknown optimizer 'adamm'", "did you mean 'adam'?"]),
    ("optimizer-lr-twice", with_head(HEAD.replace(
        "optimizer: adam", "optimizer: {name: sgd, lr: 0.1, learning_rate: 0.1}")),
     ["field 'train.optimizer'", "'lr'", "'learning_rate'", "received both"]),
    ("optimizer-argument-typo", with_head(HEAD.replace(
        "optimizer: adam", "optimizer: {name: sgd, momentun: 0.9}")),
     ["field 'train.optimizer'", "Unknown argument 'momentun'", "did you mean 'momentum'?"]),
    ("optimizer-without-name", with_head(HEAD.replace(
        "optimizer: adam", "optimizer: {learning_rate: 0.01}")),
     ["field 'train.optimizer'", "Expected an optimizer name", "received {learning_rate: 0.01}"]),
    ("learning-rate-in-train", with_head(HEAD.replace("epochs: 2", "epochs: 2\n  lr: 0.01")),
     ["field 'train'", "Unknown field 'lr'", "optimizer argument"]),
    ("optimizer-at-top-level", with_head("optimizer: sgd\n" + HEAD),
     ["Unknown field 'optimizer'", "belongs under 'train:'"]),
    ("batch-size-negative", with_head(HEAD.replace("batch_size: 64", "batch_size: -64")),
     ["field 'train.batch_size'", "Expected a positive integer, received -64"]),
    ("epochs-zero", with_head(HEAD.replace("epochs: 2", "epochs: 0")),
     ["field 'train.epochs'", "Expected a positive integer, received 0"]),
    ("epochs-in-model", HEAD + """\
models:
  mlp:
    epochs: 5
    layers: [Flatten, {Dense: {units: 10, activation: softmax}}]
""", ["model 'mlp'", "Unknown field 'epochs'", "under its 'train:'"]),
    ("model-train-typo", HEAD + """\
models:
  mlp:
    train: {epoch: 5}
    layers: [Flatten, {Dense: {units: 10, activation: softmax}}]
""", ["model 'mlp'", "field 'train'", "Unknown field 'epoch'", "did you mean 'epochs'?"]),
    ("loss-mse", with_head(HEAD.replace("epochs: 2", "epochs: 2\n  loss: mse")),
     ["field 'train.loss'", "received 'mse'", "'categorical_crossentropy'"]),
    ("early-stopping-monitor", with_head(HEAD.replace(
        "epochs: 2", "epochs: 2\n  early_stopping: {monitor: val_acc, patience: 2}")),
     ["field 'train.early_stopping.monitor'", "did you mean 'val_accuracy'?"]),
    # --- data -----------------------------------------------------------------------------------
    ("dataset-unknown", with_head(HEAD.replace("dataset: mnist-sample", "dataset: cifar-10")),
     ["field 'data.dataset'", "Expected a built-in dataset (mnist, fashion-mnist, mnist-sample,",
      "or a source such as {folder: PATH}", "received 'cifar-10'", "did you mean 'cifar10'?"]),
    ("dataset-two-sources", with_head(HEAD.replace("dataset: mnist-sample",
                                                   "dataset: {folder: a, csv: b.csv}")),
     ["field 'data.dataset'", "exactly one of {folder: ...}, {csv: ...}"]),
    ("dataset-source-typo", with_head(HEAD.replace("dataset: mnist-sample",
                                                   "dataset: {folder: a, colour_mode: rgb}")),
     ["field 'data.dataset'", "Unknown field 'colour_mode'", "did you mean 'color_mode'?"]),
    ("validation-split-above-1", with_head(HEAD.replace("{split: 0.1}", "{split: 1.5}")),
     ["field 'data.validation.split'", "Expected a number > 0 and < 1, received 1.5"]),
    ("validation-train", with_head(HEAD.replace("{split: 0.1}", "train")),
     ["field 'data.validation'", "Expected 'test' or {split: FRACTION}", "received 'train'"]),
    ("validation-bare-fraction", with_head(HEAD.replace("{split: 0.1}", "0.2")),
     ["field 'data.validation'", "{split: FRACTION}", "received 0.2"]),
    # --- the study itself -----------------------------------------------------------------------
    ("name-missing", with_head(HEAD.replace("name: first-study\n", "")),
     ["Missing required field 'name'"]),
    ("name-with-space", with_head(HEAD.replace("first-study", "my first study")),
     ["field 'name'", "received 'my first study'"]),
    ("yaml-bad-indentation", HEAD + """\
models:
  mlp:
    layers:
      - Flatten
     - Dense: {units: 10, activation: softmax}
""", ["invalid YAML at line 13", "indentation"]),
    ("yaml-tab", HEAD + "models:\n  mlp:\n\tlayers: [Flatten]\n",
     ["invalid YAML at line 11", "tab"]),
    ("yaml-missing-comma", with_layers("""\
        - Conv2D: {filters: 32 kernel_size: 3}
        """, OUTPUT), ["invalid YAML at line 12", "comma"]),
    ("yaml-duplicate-model", HEAD + """\
models:
  mlp:
    layers: [Flatten, {Dense: {units: 10, activation: softmax}}]
  mlp:
    layers: [Flatten, {Dense: {units: 10, activation: relu}}]
""", ["invalid YAML at line 12", "duplicate key 'mlp'", "line 10"]),
    ("top-level-list", "- name: first-study\n- models: {}\n",
     ["Expected a mapping with 'name' and 'models'", "received a list"]),
    ("empty-file", "", ["Expected a mapping with 'name' and 'models'", "received an empty file"]),
    # --- shapes -----------------------------------------------------------------------------------
    ("kernel-larger-than-input", with_layers("""\
        - Conv2D: {filters: 32, kernel_size: 3, padding: same}
        - MaxPooling2D: {pool_size: 2}
        - MaxPooling2D: {pool_size: 2}
        - MaxPooling2D: {pool_size: 2}
        - Conv2D: {filters: 64, kernel_size: 5}
        """, OUTPUT), [CNN, "layer 5 (Conv2D)", "field 'kernel_size'", "5x5",
                       "input shape (3, 3, 32)"]),
    ("pooling-to-nothing", with_layers("""\
        - Conv2D: {filters: 8, kernel_size: 3, padding: same}
        - MaxPooling2D: {pool_size: 2}
        - MaxPooling2D: {pool_size: 2}
        - MaxPooling2D: {pool_size: 2}
        - MaxPooling2D: {pool_size: 2}
        - MaxPooling2D: {pool_size: 2}
        """, OUTPUT), [CNN, "layer 6 (MaxPooling2D)", "field 'pool_size'",
                       "input shape (1, 1, 8)"]),
    ("dense-on-conv-output", with_layers("""\
        - Conv2D: {filters: 8, kernel_size: 3}
        - Dense: {units: 10, activation: softmax}
        """), [CNN, "layer 2 (Dense)", "Flatten", "input shape (26, 26, 8)"]),
    ("conv-after-flatten", with_layers("""\
        - Flatten
        - Conv2D: {filters: 8, kernel_size: 3}
        """, OUTPUT), [CNN, "layer 2 (Conv2D)", "input shape (784,)"]),
    ("concatenate-different-sizes", with_layers("""\
        - Conv2D: {filters: 8, kernel_size: 3, padding: same}
        - Concatenate:
            branches:
              - [{Conv2D: {filters: 8, kernel_size: 3, padding: same}}]
              - [{Conv2D: {filters: 8, kernel_size: 3}}]
        """, OUTPUT), [CNN, "layer 2 (Concatenate)", "field 'branches'", "(28, 28, 8)",
                       "(26, 26, 8)", "input shape (28, 28, 8)"]),
    ("concatenate-branch-typo", with_layers("""\
        - Concatenate:
            branches:
              - [{Conv2D: {filters: 8, kernel_size: 1, padding: same}}]
              - [{Conv2D: {filters: 8, kernal_size: 3, padding: same}}]
        """, OUTPUT), [CNN, "layer 1 (Concatenate), branch 2, layer 1 (Conv2D)",
                       "Unknown argument 'kernal_size'", "did you mean 'kernel_size'?"]),
    ("concatenate-one-branch", with_layers("""\
        - Concatenate:
            branches:
              - [{Conv2D: {filters: 8, kernel_size: 3, padding: same}}]
        """, OUTPUT), [CNN, "layer 1 (Concatenate)", "field 'branches'",
                       "Expected at least 2 branches, received 1"]),
    ("output-without-softmax", with_layers("""\
        - Flatten
        - Dense: {units: 10}
        """), [CNN, "layer 2 (Dense)", "field 'activation'", "'softmax'"]),
]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def assert_one_line_error(rc: int, out: str, err: str, source: str, expected: list[str]) -> None:
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err + out
    assert err.startswith("error: "), err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line:\n{err}"
    assert source in err, err
    for part in expected:
        assert part in err, f"{part!r} not in {err!r}"


def test_enough_kinds_of_mistakes() -> None:
    assert len(MALFORMED) >= 25
    assert len({case[0] for case in MALFORMED}) == len(MALFORMED)


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in MALFORMED],
                         ids=[c[0] for c in MALFORMED])
def test_malformed_study(text: str, expected: list[str], tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    rc, out, err = run_cli(["validate", str(path), "--no-timing"], capsys)
    assert_one_line_error(rc, out, err, str(path), expected)
    assert out == ""


# Mistakes in what is asked for on the command line rather than in the file.
def _argv_cases(tmp: Path) -> dict[str, tuple[list[str], str, list[str]]]:
    study = tmp / "study.yaml"
    study.write_text(VALID)
    return {
        "missing-file": (["validate", str(tmp / "studdy.yaml"), "--no-timing"],
                         str(tmp / "studdy.yaml"), ["No such study file",
                                                    "did you mean", "study.yaml"]),
        "zoo-name-without-prefix": (["validate", "quickstart", "--no-timing"], "quickstart",
                                    ["No such study file", "did you mean 'zoo:quickstart'?"]),
        "zoo-unknown": (["validate", "zoo:quikstart", "--no-timing"], "zoo:quikstart",
                        ["Expected a built-in study", "did you mean 'zoo:quickstart'?"]),
        "directory": (["validate", str(tmp), "--no-timing"], str(tmp),
                      ["Expected a study file, received a directory"]),
        "models-unknown": (["validate", str(study), "--models", "cnn,mpl", "--no-timing"],
                           str(study), ["Expected a model of study 'spec-example'",
                                        "received 'mpl'", "did you mean 'mlp'?"]),
        # The CLI checks its counts before reading the study: the line names the option.
        "epochs-option-zero": (["run", str(study), "--epochs", "0", "--dry-run"], "--epochs",
                               ["expected a whole number >= 1, received 0"]),
    }


ARGV_IDS = ["missing-file", "zoo-name-without-prefix", "zoo-unknown", "directory",
            "models-unknown", "epochs-option-zero"]


@pytest.mark.parametrize("case", ARGV_IDS)
def test_bad_command_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    argv, source, expected = _argv_cases(tmp_path)[case]
    rc, out, err = run_cli(argv, capsys)
    assert_one_line_error(rc, out, err, source, expected)


# Known gaps outside this file's owner; strict, so the fix shows up as a failure to remove.
def test_output_units_must_match_classes(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(with_layers("- Flatten\n- Dense: {units: 5, activation: softmax}\n"))
    rc, out, err = run_cli(["validate", str(path), "--no-timing"], capsys)
    assert_one_line_error(rc, out, err, str(path), [CNN, "layer 2 (Dense)", "field 'units'",
                                                    "10"])


def test_messages_are_one_line_without_the_cli(tmp_path: Path) -> None:
    """The SpecError itself never holds a line break, whatever the console does with it."""
    for i, text in enumerate(c[1] for c in MALFORMED):
        path = tmp_path / f"s{i}.yaml"
        path.write_text(text)
        try:
            validate_study(load_study(path))
        except SpecError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(path)), str(exc)
        else:
            pytest.fail(f"accepted: {text}")


# --- valid studies -----------------------------------------------------------------------------

VALID = """\
# The example of docs/spec.md, with a branch model and an MLP.
name: spec-example
description: Notebook 003-style models
seed: 0
data:
  dataset: mnist
  validation: test
  preprocessing: scale
train:
  optimizer: {name: adadelta}
  batch_size: 128
  epochs: 13
  loss: categorical_crossentropy
models:
  cnn:
    description: 5x5 kernels, no padding
    train: {epochs: 3, optimizer: {name: sgd, lr: 1e-2, momentum: 0.9}}
    layers:
      - Conv2D: {filters: 32, kernel_size: 5, activation: relu, kernel_initializer: he_normal}
      - MaxPooling2D: {pool_size: 2}
      - Dropout: {rate: 0.25}
      - Concatenate:
          branches:
            - [{Conv2D: {filters: 32, kernel_size: 1, padding: same, activation: relu}}]
            - [{Conv2D: {filters: 32, kernel_size: [3, 3], padding: same, activation: relu}}]
            - - Conv2D: {filters: 32, kernel_size: 1, padding: same, activation: relu}
              - MaxPooling2D: {pool_size: 3, strides: 1, padding: same}
            - []
      - BatchNormalization
      - Flatten
      - Dense: {units: 64, activation: relu, kernel_regularizer: {l2: 0.01}}
      - Dense: {units: 10, activation: softmax}
  mlp:
    train:
      early_stopping: {monitor: val_accuracy, patience: 2}
    layers:
      - Flatten
      - Dense: {units: 32, activation: relu}
      - Dense: {units: 10, activation: softmax}
"""


def test_valid_study_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(VALID)
    rc, out, err = run_cli(["validate", str(path), "--no-timing"], capsys)
    assert (rc, err) == (0, "")
    assert "2 model(s) valid" in out
    study = load_study(path)
    assert study.train_for("cnn").optimizer.learning_rate == 0.01  # 1e-2 is a number (YAML 1.2)


def test_json_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A study may be JSON, tab-indented as editors write it (YAML forbids tabs)."""
    (tmp_path / "study.yaml").write_text(VALID)
    config = load_study(tmp_path / "study.yaml").to_config()
    path = tmp_path / "study.json"
    path.write_text(json.dumps(config, indent="\t"))
    assert run_cli(["validate", str(path), "--no-timing"], capsys)[0] == 0
    path.write_text(json.dumps(config, indent="\t")[:-2] + ",\n}")
    rc, out, err = run_cli(["validate", str(path), "--no-timing"], capsys)
    assert_one_line_error(rc, out, err, str(path), ["invalid JSON at line"])


def _tree(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under ``root``: files with their size and mtime, directories as None."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            if p.is_file() else None for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("timing", [False, True], ids=["no-timing", "timing"])
def test_validate_writes_nothing(timing: bool, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (work / "study.yaml").write_text(VALID)
    (work / "bad.yaml").write_text(with_layers("- Flatten\n- Dense: {units: 10}\n"))
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("ARCHLAB_CACHE_DIR", str(home / "archlab-cache"))
    before = _tree(tmp_path)
    timing_args = [] if timing else ["--no-timing"]
    rc, _, err = run_cli(["validate", "study.yaml", "--models", "mlp", *timing_args], capsys)
    # A timed validate on a busy machine warns that the projection is unreliable; no error.
    assert rc == 0 and all(line.startswith("warning: ") for line in err.splitlines()), err
    assert run_cli(["validate", "bad.yaml", *timing_args], capsys)[0] == 2
    after = _tree(tmp_path)
    # The one thing a timed validate may write: the step-timing cache (issue 7), in the cache.
    cache = {k for k in set(after) - set(before) if k.startswith("home/archlab-cache")}
    assert cache <= {"home/archlab-cache", "home/archlab-cache/step-timings.json"}
    assert not cache or timing
    assert {k: v for k, v in after.items() if k not in cache} == before


# --- round trip and schema ---------------------------------------------------------------------

ROUND_TRIP = [("spec-example", VALID)] + [(f"zoo:{n}", None) for n in zoo_names()]


@pytest.mark.parametrize(("name", "text"), ROUND_TRIP, ids=[r[0] for r in ROUND_TRIP])
def test_round_trip(name: str, text: str | None, tmp_path: Path) -> None:
    if text is None:
        study = load_study(name)
    else:
        (tmp_path / "s.yaml").write_text(text)
        study = load_study(tmp_path / "s.yaml")
    config = study.to_config()
    again = parse_study(json.loads(json.dumps(config)), study.source)  # plain JSON types only
    assert again == study
    assert again.to_config() == config
    for model in study.models:
        assert again.train_for(model) == study.train_for(model)
        assert again.models[model].layers == study.models[model].layers
    # ... and through the YAML the run store keeps
    (tmp_path / "dumped.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert load_study(tmp_path / "dumped.yaml").to_config() == config


def test_schema_export(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    out = capsys.readouterr().out
    schema = json.loads(out)
    assert schema["type"] == "object"
    assert {"name", "models"} <= set(schema["required"])
    for layer in LAYER_TYPES:
        assert f'"{layer}"' in out, layer
    for optimizer in ("sgd", "adam", "adadelta", "rmsprop", "adagrad", "nadam"):
        assert f'"{optimizer}"' in out, optimizer
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema)


def test_schema_accepts_the_builtin_studies() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from importlib import resources

    from archlab.spec import study_json_schema

    validator = jsonschema.Draft202012Validator(study_json_schema())
    for name in zoo_names():
        data = yaml.safe_load(resources.files("archlab").joinpath(f"zoo/{name}.yaml")
                              .read_text(encoding="utf-8"))
        assert not list(validator.iter_errors(data)), name

