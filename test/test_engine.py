"""The training engine: six strategies, fixed layers, resume, repeatability, evaluation, sources."""

import json
import os

import pytest
import torch

from fillcls import core
from training import engine
from training.config import STRATEGIES, get_preset, resolve_run

from helpers import PRESET, quiet, toy_cropset, toy_data



@pytest.fixture(scope="module")
def source_dir(tmp_path_factory):
    """Source models as `training pretrain` names them: standard (eps 0) and robust (S1's eps)."""
    d = tmp_path_factory.mktemp("sources")
    torch.manual_seed(1)
    model = core.build_model("resnet18")
    engine.fit(model, toy_cropset(32, 16, 5), epochs=1, lr=0.05, batch_size=16, log=quiet)
    for eps in (0.0, PRESET.eps_source["S1"]):
        core.save_checkpoint(d / f"source_resnet18_eps{eps:g}.pt", model.state_dict(),
                             core.CheckpointHeader(input_size=16, training={"eps": eps}))
    return str(d)


def test_six_strategies_train_and_loss_falls(tmp_path, source_dir):
    cfgs = [resolve_run("tiny", PRESET, "S1", s) for s in STRATEGIES]
    results = engine.run_many(cfgs, str(tmp_path), source_dir=source_dir, log=quiet, data=toy_data)
    assert [r["config"]["strategy"] for r in results] == list(STRATEGIES)
    for cfg, r in zip(cfgs, results):
        loss = r["history"]["loss"]
        assert len(loss) == 3 and loss[-1] < loss[0], (cfg.strategy, loss)
        run_dir = engine.run_dir_for(tmp_path, cfg)
        for f in ("config.json", "last.pt", "result.json", "model.pt", "train.log"):
            assert os.path.isfile(os.path.join(run_dir, f)), f
        model, header = core.load_classifier(os.path.join(run_dir, "model.pt"))
        assert header.training["strategy"] == STRATEGIES[cfg.strategy].label and header.input_size == 16
        m = r["metrics"]
        assert set(m["per_container"]) == {"C6", "C7"} and m["n"] == 24
        assert (m["robust_acc"] is None) == (cfg.eval_eps == 0)
        assert (r["config"]["source"] is not None) == STRATEGIES[cfg.strategy].transfer
    assert results[1]["config"]["eps_target"] > 0 and results[0]["config"]["eps_target"] == 0


def test_missing_source_is_a_clear_error(tmp_path):
    cfg = resolve_run("tiny", PRESET, "S2", "AT-AFT")
    expected = r"source_resnet18_eps1.pt \(for S2 AT-AFT\)(.|\n)*pretrain --preset tiny --eps 1 "
    with pytest.raises(engine.RunError, match=expected):
        engine.run_many([cfg], str(tmp_path / "runs"), source_dir=str(tmp_path), log=quiet, data=toy_data)
    assert not os.path.exists(tmp_path / "runs")


@pytest.mark.parametrize("L", [1, 4])
def test_fixed_layers_and_bn_stats_stay_bit_identical(L):
    torch.manual_seed(0)
    model = core.build_model("resnet18")
    fixed_prefixes = tuple(f"net.{n}." for block in core.RESNET_BLOCKS[:L] for n in block)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    engine.fit(model, toy_cropset(32, 16), epochs=1, lr=0.05, batch_size=16, fixed_layers=L,
               eps=0.1, attack_steps=1, log=quiet)
    after = model.state_dict()
    fixed = [k for k in after if k.startswith(fixed_prefixes)]
    assert any("running_mean" in k for k in fixed) and any("num_batches_tracked" in k for k in fixed)
    assert all(torch.equal(before[k], after[k]) for k in fixed)
    assert not torch.equal(before["net.fc.weight"], after["net.fc.weight"])
    if L < 4:
        key = "net.layer4.1.bn2.running_mean"
        assert not torch.equal(before[key], after[key])


class Kill(Exception):
    pass


def _fit(run_dir, **kw):
    torch.manual_seed(0)
    model = core.build_model("resnet18")
    kw = dict(epochs=3, lr=0.05, batch_size=16, samples_per_epoch=40, eps=0.1, attack_steps=1, seed=3,
              run_dir=run_dir, log=quiet, **kw)
    return model, engine.fit(model, toy_cropset(32, 16), **kw)


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    ref, ref_hist = _fit(str(tmp_path / "ref"))

    def kill_after_first_epoch(epoch, history):
        if epoch == 0:
            raise Kill

    def kill_in_epoch_two(epoch, step, loss):
        if epoch == 1 and step == 1:
            raise Kill

    run = str(tmp_path / "run")
    with pytest.raises(Kill):
        _fit(run, on_epoch=kill_after_first_epoch)
    assert torch.load(os.path.join(run, "last.pt"), weights_only=True)["epoch"] == 1
    with pytest.raises(Kill):
        _fit(run, on_step=kill_in_epoch_two)
    assert torch.load(os.path.join(run, "last.pt"), weights_only=True)["epoch"] == 1  # epoch 2 lost
    model, hist = _fit(run)
    assert hist["resumed_from"] == 1 and hist["epoch"] == [1, 2, 3]
    assert hist["loss"] == ref_hist["loss"]
    ref_sd, sd = ref.state_dict(), model.state_dict()
    assert all(torch.equal(ref_sd[k], sd[k]) for k in ref_sd)
    # a finished run resumes to itself without training
    again, hist2 = _fit(run, on_step=kill_in_epoch_two)
    assert hist2["resumed_from"] == 3 and all(torch.equal(sd[k], again.state_dict()[k]) for k in sd)
    with pytest.raises(engine.RunError, match="other settings"):
        _fit(run, momentum=0.5)


def test_run_one_skips_finished_run_and_guards_its_directory(tmp_path):
    cfg = resolve_run("tiny", PRESET, "S1", "ST")
    train, test = toy_data(PRESET, "S1")
    run_dir = engine.run_dir_for(tmp_path, cfg)
    assert engine.run_status(str(tmp_path), cfg) == "todo"
    first = engine.run_one(cfg, train, test, run_dir, log=quiet)
    assert engine.run_status(str(tmp_path), cfg) == "done"
    stamp = os.path.getmtime(os.path.join(run_dir, "model.pt"))
    logs = []
    second = engine.run_one(cfg, train, test, run_dir, log=logs.append)
    assert second == json.loads(json.dumps(first)) and "skipped" in logs[0]
    assert os.path.getmtime(os.path.join(run_dir, "model.pt")) == stamp
    other = resolve_run("tiny", PRESET.replace(epochs=2), "S1", "ST")
    assert engine.run_status(str(tmp_path), other) == "other"
    with pytest.raises(engine.RunError, match="another config"):
        engine.run_one(other, train, test, run_dir, log=quiet)
    redo = engine.run_one(other, train, test, run_dir, resume=False, log=quiet)
    assert len(redo["history"]["loss"]) == 2
    # the same config run elsewhere gives the same weights (seeded, CPU)
    again = engine.run_one(cfg, train, test, str(tmp_path / "again" / "ST"), log=quiet)
    assert again["history"]["loss"] == first["history"]["loss"]
    assert again["metrics"]["confusion"] == first["metrics"]["confusion"]


def test_evaluate_is_consistent():
    torch.manual_seed(0)
    model = core.build_model("resnet18")
    engine.fit(model, toy_cropset(48, 16), epochs=2, lr=0.05, batch_size=16, log=quiet)
    test = toy_cropset(30, 16, 1, ("C5", "C6", "C7"))
    m = engine.evaluate(model, test, batch_size=7)
    conf = torch.tensor(m["confusion"])
    assert conf.sum() == 30 and m["n"] == 30 and m["robust_acc"] is None
    assert m["acc"] == pytest.approx(conf.trace().item() / 30)
    assert sum(m["per_container"][c] * m["container_n"][c] for c in m["per_container"]) == pytest.approx(
        m["acc"] * 30)
    r = engine.evaluate(model, test, eps=0.5, steps=2, max_attack=12)
    assert r["robust_n"] == 12 and 0 <= r["robust_acc"] <= 1 and r["acc"] == m["acc"]
    assert set(r["robust_per_container"]) <= {"C5", "C6", "C7"}


def test_balanced_sampling_evens_out_classes():
    labels = torch.tensor([0] * 80 + [1] * 10 + [2] * 8 + [3] * 2)
    batches = engine.epoch_batches(labels, 4000, 32, True, torch.Generator().manual_seed(0))
    counts = torch.bincount(labels[torch.cat(batches)], minlength=4).float() / 4000
    assert (counts - 0.25).abs().max() < 0.04
    flat = torch.cat(engine.epoch_batches(labels, 100, 32, False, torch.Generator().manual_seed(0)))
    assert sorted(flat.tolist()) == list(range(100))  # a permutation; 4 left over: 100 = 3*32 + 4


def test_plan_study_dedupes_shared_runs():
    p = get_preset("tiny")
    cfgs = engine.plan_study("tiny", p, ["S1", "S2", "S3"])
    names = [(c.split, c.name) for c in cfgs]
    assert len(names) == len(set(names))
    assert sum(c.group == "main" for c in cfgs) == 18
    # L sweep (0, 4) on 3 splits: 6 new; eps sweep (0.05, 0.5): S1 0.05 and S3 0.5 are main runs
    assert len(cfgs) == 18 + 6 + 4


def test_layer_reading_resnet_table1():
    """resnet_table1: L = 1 fixes the stem only; L = 4 leaves layer4 and the head training."""
    torch.manual_seed(0)
    model = core.build_model("resnet18")
    net = model.net
    assert engine.fixed_modules(model, 1, "resnet_table1") == [net.conv1, net.bn1]
    assert engine.fixed_modules(model, 4, "resnet_table1") == [net.conv1, net.bn1, net.layer1, net.layer2,
                                                                net.layer3]
    assert engine.fixed_modules(model, 1) == core.fixed_modules(model, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    engine.fit(model, toy_cropset(32, 16), epochs=1, lr=0.05, batch_size=16, fixed_layers=1,
               layer_reading="resnet_table1", log=quiet)
    after = model.state_dict()
    assert torch.equal(before["net.conv1.weight"], after["net.conv1.weight"])
    assert torch.equal(before["net.bn1.running_mean"], after["net.bn1.running_mean"])
    assert not torch.equal(before["net.layer1.0.conv1.weight"], after["net.layer1.0.conv1.weight"])
    a = resolve_run("tiny", PRESET, "S1", "ST-FT")
    b = resolve_run("tiny", PRESET.replace(layer_reading="resnet_table1"), "S1", "ST-FT")
    assert a.identity() != b.identity() and b.fit_config().layer_reading == "resnet_table1"


def test_exposure_scales_each_crop_within_its_range_and_is_off_by_default():
    train = toy_cropset(8, 16)
    idx = torch.arange(8)
    untouched, drawn = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    plain, _ = engine.make_batch(train, idx, False, untouched, "cpu")
    exposed, _ = engine.make_batch(train, idx, False, drawn, "cpu", exposure=1.0)
    assert torch.equal(untouched.get_state(), torch.Generator().manual_seed(0).get_state())  # off: no draw
    gain = exposed.flatten(1).sum(1) / plain.flatten(1).sum(1)  # clipping only lowers a gain above 1
    assert bool(((gain > 0.5 - 1e-4) & (gain < 2 + 1e-4)).all()) and not torch.allclose(gain, torch.ones(8))
    # runs and sources made before the option existed keep their identity
    assert "exposure" not in get_preset("cpu").run_values()
    assert get_preset("cpu", exposure=0.5).run_values()["exposure"] == 0.5
    with pytest.raises(ValueError, match="exposure"):
        get_preset("cpu", exposure=-1)
