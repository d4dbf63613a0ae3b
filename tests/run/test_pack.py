"""Packed repeats in a study: store records, checkpoints, resume, --no-pack, the probe's cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import archlab
import archlab.run.study as study_module
from archlab.cli import main
from archlab.run import plan_runs
from archlab.run.pack import PackProbe, pack_probe
from archlab.store import CHECKPOINT_FILE, PREDICTIONS_FILE, WEIGHTS_FILE, RunStatus, Store


@pytest.fixture
def mlp_study(tiny_config: dict[str, Any]) -> archlab.Study:
    """TINY's MLP alone, 3 repeats, momentum SGD with L2 (fast: about a second a run)."""
    tiny_config["models"] = {"mlp": tiny_config["models"]["mlp"]}
    tiny_config["models"]["mlp"]["layers"][1]["Dense"]["kernel_regularizer"] = {"l2": 1e-3}
    tiny_config["train"].update(repeats=3, optimizer={"name": "sgd", "momentum": 0.9})
    return archlab.parse_study(tiny_config)


@pytest.fixture
def always_pack(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Pack whatever is packable, whatever the probe would measure; records the calls."""
    calls: list[tuple[str, int]] = []

    def should_pack(study: Any, model: str, n: int, *, device: str = "cpu") -> bool:
        calls.append((model, n))
        return n > 1

    monkeypatch.setattr(study_module, "should_pack", should_pack)
    return calls


def _runs(directory: Path) -> dict[str, Any]:
    with Store(directory) as store:
        return {r.run_id: r for r in store.runs()}


def test_each_replica_is_its_own_run(mlp_study: archlab.Study, tmp_path: Path,
                                     always_pack: list[tuple[str, int]]) -> None:
    outcome = archlab.run_study(mlp_study, tmp_path / "packed", threads=1)
    archlab.run_study(mlp_study, tmp_path / "separate", threads=1, pack=False)
    assert always_pack == [("mlp", 3)]  # pack=False never asks
    plans = plan_runs(mlp_study)
    assert set(outcome.statuses) == {p.run_id for p in plans}  # the separate runs' ids
    packed, alone = _runs(tmp_path / "packed"), _runs(tmp_path / "separate")
    assert set(packed) == set(alone)
    with Store(tmp_path / "packed") as store:
        for plan in plans:
            run = packed[plan.run_id]
            assert run.status is RunStatus.FINISHED and run.seed == plan.seed
            assert run.environment["packed"] == 3
            assert "packed" not in alone[plan.run_id].environment
            assert run.epochs_done == 2 and len(store.history(plan.run_id)) == 2
            for name in (WEIGHTS_FILE, PREDICTIONS_FILE):
                assert store.verify_file(plan.run_id, name).exists()
            assert not (store.run_dir(plan.run_id) / CHECKPOINT_FILE).exists()
            for key, value in alone[plan.run_id].metrics.items():
                assert run.metrics[key] == pytest.approx(value, abs=1e-5), key
    assert len({round(r.metrics["test_loss"], 5) for r in packed.values()}) == 3


def test_a_killed_pack_resumes_every_replica(mlp_study: archlab.Study, tmp_path: Path,
                                             always_pack: list[tuple[str, int]]) -> None:
    out = tmp_path / "killed"

    def after_first_epoch() -> bool:  # a checkpoint exists: epoch 1 is recorded
        return any(out.glob(f"runs/*/{CHECKPOINT_FILE}"))

    first = archlab.run_study(mlp_study, out, threads=1, stop=after_first_epoch)
    assert first.interrupted
    assert set(first.statuses.values()) == {RunStatus.INTERRUPTED.value}
    with Store(out) as store:
        ckpts = [store.run_dir(r.run_id) / CHECKPOINT_FILE for r in store.runs()]
        assert len(ckpts) == 3 and all(c.exists() for c in ckpts)
        assert {r.epochs_done for r in store.runs()} == {1}
    archlab.run_study(mlp_study, out, threads=1)
    archlab.run_study(mlp_study, tmp_path / "whole", threads=1)
    resumed, whole = _runs(out), _runs(tmp_path / "whole")
    for rid, run in whole.items():
        assert resumed[rid].status is RunStatus.FINISHED
        assert resumed[rid].metrics == run.metrics  # bit for bit


@pytest.mark.parametrize("damage", ["deleted", "corrupt"])
def test_replicas_at_different_epochs_run_separately(mlp_study: archlab.Study, tmp_path: Path,
                                                     always_pack: list[tuple[str, int]],
                                                     damage: str) -> None:
    out = tmp_path / "mixed"
    archlab.run_study(mlp_study, out, threads=1,
                      stop=lambda: any(out.glob(f"runs/*/{CHECKPOINT_FILE}")))
    first = plan_runs(mlp_study)[0].run_id
    with Store(out) as store:
        ckpt = store.run_dir(first) / CHECKPOINT_FILE
    if damage == "deleted":
        ckpt.unlink()  # now at epoch 0, the others at 1
    else:
        ckpt.write_bytes(b"not a checkpoint")  # discarded (with a warning): epoch 0 too
    outcome = archlab.run_study(mlp_study, out, threads=1)
    if damage == "corrupt":
        assert any("checkpoint discarded" in w for w in _runs(out)[first].warnings)
    assert set(outcome.statuses.values()) == {RunStatus.FINISHED.value}
    whole = archlab.run_study(mlp_study, tmp_path / "whole", threads=1)
    assert whole.statuses
    resumed, reference = _runs(out), _runs(tmp_path / "whole")
    for rid, run in reference.items():
        assert resumed[rid].epochs_done == 2
        for key, value in run.metrics.items():
            assert resumed[rid].metrics[key] == pytest.approx(value, abs=1e-5)


def test_a_repeat_added_later_runs_alone(mlp_study: archlab.Study, tmp_path: Path,
                                         always_pack: list[tuple[str, int]]) -> None:
    archlab.run_study(mlp_study, tmp_path, threads=1, repeats=2)
    outcome = archlab.run_study(mlp_study, tmp_path, threads=1, repeats=3)
    assert len(outcome.skipped) == 2 and len(outcome.statuses) == 1
    assert always_pack == [("mlp", 2)]  # one run left: nothing to pack, no probe
    added = _runs(tmp_path)[next(iter(outcome.statuses))]
    assert added.status is RunStatus.FINISHED and "packed" not in added.environment


def test_no_pack_on_the_command_line(tmp_path: Path, always_pack: list[tuple[str, int]],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHLAB_CACHE_DIR", str(tmp_path / "cache"))
    study = tmp_path / "s.yaml"
    study.write_text(
        "name: s\nseed: 3\ndata: {dataset: mnist-sample, validation: {split: 0.1}}\n"
        "train: {optimizer: sgd, batch_size: 256, epochs: 1, repeats: 2}\n"
        "models:\n  m: {layers: [Flatten, {Dense: {units: 10, activation: softmax}}]}\n")
    args = ["run", str(study), "--threads", "1", "--quiet", "--no-report", "--no-timing"]
    assert main([*args, "--no-pack", "--out", str(tmp_path / "a")]) == 0
    assert always_pack == []
    assert all("packed" not in r.environment for r in _runs(tmp_path / "a").values())
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert always_pack == [("m", 2)]
    assert all(r.environment["packed"] == 2 for r in _runs(tmp_path / "b").values())


def test_the_probe_is_cached_per_model_and_count(tiny_study: archlab.Study, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHLAB_CACHE_DIR", str(tmp_path))
    first = pack_probe(tiny_study, "mlp", 3, steps=2)
    assert isinstance(first, PackProbe) and not first.cached
    assert first.ratio > 0 and first.packed_step_s > 0 and first.separate_step_s > 0
    again = pack_probe(tiny_study, "mlp", 3, steps=2)
    assert again.cached and again.ratio == first.ratio and again.pack == first.pack
    assert not pack_probe(tiny_study, "mlp", 2, steps=2).cached  # n is part of the key
    assert (tmp_path / "step-timings.json").exists()


def test_should_pack_probes_only_what_could_pay(tiny_study: archlab.Study,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import archlab.run.pack as pack_module

    probed: list[int] = []

    def probe(study: Any, model: str, n: int, **_: Any) -> PackProbe:
        probed.append(n)
        return PackProbe(n, 2.0 if n == 3 else 0.9, 0.01, 0.01, None, 0.0)

    monkeypatch.setattr(pack_module, "pack_probe", probe)
    monkeypatch.setattr(pack_module, "projected_seconds", lambda *a, **k: 1.0)
    assert not pack_module.should_pack(tiny_study, "mlp", 3)  # 3 s of training: no probe
    assert not pack_module.should_pack(tiny_study, "mlp", 1)
    assert probed == []
    monkeypatch.setattr(pack_module, "projected_seconds", lambda *a, **k: 100.0)
    assert pack_module.should_pack(tiny_study, "mlp", 3)  # measured 2x: packed
    assert not pack_module.should_pack(tiny_study, "mlp", 4)  # measured 0.9x: separate
    assert not pack_module.should_pack(tiny_study, "cnn", 3)  # a CNN on the CPU: no probe
    assert pack_module.should_pack(tiny_study, "cnn", 3, device="cuda")
    assert probed == [3, 4, 3]

    def broken(*_: Any, **__: Any) -> PackProbe:
        raise RuntimeError("vmap: no batching rule for some op")

    monkeypatch.setattr(pack_module, "pack_probe", broken)
    assert not pack_module.should_pack(tiny_study, "mlp", 3)  # a failed probe: separate runs
