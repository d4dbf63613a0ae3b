"""`archlab.load_trained`: the trained network, from safetensors only; a bad file is refused."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import archlab
from archlab import TrainedModel, export_metadata, export_model, load_trained, preprocess_images
from archlab.cli import main
from tests.inference.conftest import Trained


def test_load_trained_outputs_probabilities_in_eval_mode(quickstart: Trained,
                                                        sample: archlab.RawDataset) -> None:
    torch.manual_seed(5)
    before = torch.get_rng_state()
    model = load_trained(quickstart.directory, quickstart.conv)
    assert torch.equal(torch.get_rng_state(), before)  # building it leaves the RNG alone
    assert isinstance(model, TrainedModel) and isinstance(model, torch.nn.Module)
    assert not model.training and not model.network.training
    x = preprocess_images(sample.x_test[..., 0][:50], model, mnist_style=False)
    with torch.no_grad():
        p = model(x)
        again = model(x)  # eval mode: dropout off, BatchNorm frozen, so deterministic
        logits = model.network(x)
    assert torch.equal(p, again)
    assert torch.allclose(p.sum(1), torch.ones(50), atol=1e-5) and (p >= 0).all()
    assert torch.allclose(p, torch.softmax(logits, 1))
    # Its test accuracy is the one the store recorded for the run.
    with archlab.Store(quickstart.directory) as store:
        (record,) = store.runs(run_ids=[model.info.run_id])
    x_all = preprocess_images(sample.x_test[..., 0], model, mnist_style=False)
    with torch.no_grad():
        acc = (model(x_all).argmax(1).numpy() == sample.y_test).mean()
    assert acc == pytest.approx(record.metrics["test_accuracy"], abs=1e-9)


@pytest.fixture
def study_copy(quickstart: Trained, tmp_path: Path) -> Path:
    """A copy of the trained quickstart study to damage."""
    return Path(shutil.copytree(quickstart.directory, tmp_path / "study"))


def _weights(study: Path, model: str) -> Path:
    run_id = load_trained(study, model).info.run_id
    return study / "runs" / run_id / "weights.safetensors"


def _refused(study: Path, model: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(archlab.StoreError):
        load_trained(study, model)
    assert main(["export", str(study), model, "-o", str(study / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not (study / "x.onnx").exists()
    return err


def test_truncated_weights_are_refused(study_copy: Path, quickstart: Trained, capsys) -> None:
    path = _weights(study_copy, quickstart.conv)
    path.write_bytes(path.read_bytes()[:-100])
    assert str(path) in _refused(study_copy, quickstart.conv, capsys)


def test_a_flipped_weight_byte_is_refused(study_copy: Path, quickstart: Trained,
                                          capsys) -> None:
    path = _weights(study_copy, quickstart.conv)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x10  # inside the last tensor: a valid file, a different number
    path.write_bytes(bytes(data))
    assert str(path) in _refused(study_copy, quickstart.conv, capsys)


def test_another_runs_weights_are_refused(study_copy: Path, quickstart: Trained,
                                          capsys) -> None:
    shutil.copyfile(_weights(study_copy, quickstart.mlp), _weights(study_copy, quickstart.conv))
    _refused(study_copy, quickstart.conv, capsys)


def test_a_pickle_is_never_unpickled(study_copy: Path, quickstart: Trained, tmp_path: Path,
                                     capsys) -> None:
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):  # what a malicious pickle does when it is loaded
            return (Path.touch, (marker,))

    path = _weights(study_copy, quickstart.conv)
    path.write_bytes(pickle.dumps({"weights": Payload()}))
    _refused(study_copy, quickstart.conv, capsys)
    assert not marker.exists()


def test_exported_safetensors_are_checked_too(quickstart: Trained, tmp_path: Path) -> None:
    out = export_model(quickstart.directory, tmp_path / "m.safetensors", model=quickstart.mlp,
                       format="safetensors").path
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    with pytest.raises(archlab.StoreError, match="not a valid safetensors weights file"):
        load_trained(out)
    out.write_bytes(data)
    torch.save({"a": torch.zeros(1)}, out)  # torch's own format is a pickle in a zip
    with pytest.raises(archlab.StoreError, match="not a valid safetensors weights file"):
        load_trained(out)
    # A safetensors file that is not an archlab export: metadata missing.
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(out))
    with pytest.raises(archlab.StoreError, match="not an archlab export"):
        load_trained(out)
    # Non-finite values never load.
    model = load_trained(quickstart.directory, quickstart.mlp)
    bad = export_model(model, tmp_path / "nan.safetensors", format="safetensors").path
    state = dict(model.network.state_dict())
    first = next(iter(state))
    state[first] = torch.full_like(state[first], np.nan)
    save_file(state, str(bad), metadata=export_metadata(bad))
    with pytest.raises(archlab.StoreError, match="non-finite"):
        load_trained(bad)


def test_an_unfinished_run_has_nothing_to_load(tmp_path: Path) -> None:
    directory = tmp_path / "none"
    with archlab.Store(directory) as store:
        store.start_run("abc", "mlp", 0, 1, {}, {})
    (directory / "runs" / "abc").mkdir(parents=True)
    with pytest.raises(archlab.StoreError, match="no finished run of any model"):
        load_trained(directory)
    with pytest.raises(archlab.StoreError, match="run abc is running, not finished"):
        load_trained(directory / "runs" / "abc")
