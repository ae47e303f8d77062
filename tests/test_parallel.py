"""The parallel-hospitals engine (fedmedlib.fl.parallel) against the sequential one, and its masked Adam.

Tolerances: in float64 the two engines agree to 1e-7 of the largest update coordinate (the same batches,
Poisson draws, noise draws, Adam steps; only the summation order differs; measured: ≤ 2e-12 relative). In float32 per-step gradients agree to ~4e-6 relative, but Adam
divides each gradient coordinate by its own magnitude, so rounding noise on a near-zero coordinate can flip
its first step (±lr): a few coordinates in a thousand differ by up to 2·lr after a round, and the round's
metrics agree to about 1e-3 — the same order as running the sequential engine on another device.
"""

import pytest
import torch

from fedmedlib.privacy import dpsgd
from fedmedlib import fl
from fedmedlib.fl import parallel
from fedmedlib.config import CPU
from fedmedlib.models import build_model
from fedmedlib.fl.modes import make_plugs
from fedmedlib.experiments.results import result_path

# Accountant outputs are compared with a stated tolerance, never exactly: the same ε computed in another
# process (a Flower worker) or another order differs in its last digit (5.995327573578496 vs ...4946).
EPS_TOL = 1e-9


def tiny(**kw):
    base = dict(n_clients=3, scheme="paper", rounds=2, width=8, train_subset=150, eval_subset=60, seed=1,
                batch_size=16)
    return fl.Experiment(**{**base, **kw})


def test_stacked_adam_equals_torch_adam_per_hospital_and_inactive_hospitals_do_not_move():
    torch.manual_seed(0)
    shapes, hospitals = [(5, 4), (7,)], 3
    start = [torch.randn(hospitals, *s) for s in shapes]
    reference = [[p[h].clone().requires_grad_(True) for p in start] for h in range(hospitals)]
    adams = [torch.optim.Adam(r, lr=1e-3) for r in reference]
    stacked = parallel.StackedAdam([p.clone() for p in start], lr=1e-3)
    for step in range(30):
        active = torch.tensor([True, step % 3 != 0, step < 10])
        grads = [torch.randn(hospitals, *s) * 10.0 ** -(step % 8) for s in shapes]
        for h in range(hospitals):
            if active[h]:
                for r, g in zip(reference[h], grads):
                    r.grad = g[h].clone()
                adams[h].step()
        stacked.step(grads, active)
    for h in range(hospitals):
        for r, p in zip(reference[h], stacked.params):
            torch.testing.assert_close(p[h], r.detach(), rtol=0, atol=1e-7)
    assert stacked.t.tolist() == [30, 20, 10]


def _updates(exp, engine, root, dtype, monkeypatch, channels_last=False):
    """Two rounds of local updates (all hospitals, then two of them) in `dtype`; plus the DP plug."""
    build = dpsgd.RecordLevelDP.build
    monkeypatch.setattr(dpsgd.RecordLevelDP, "build", lambda self: build(self).to(dtype))
    private, _ = make_plugs(exp)
    fed = fl.Federation(exp, root=root, private=private, engine=engine, channels_last=channels_last)
    fed.model.to(dtype)
    fed.x = fed.x.to(dtype)  # .to keeps the memory format
    start = fl.get_flat(fed.model).clone()
    first = fed.local_updates(list(range(exp.n_clients)), start, 1)
    second = fed.local_updates([0, exp.n_clients - 1], start + first[1][0], 2)
    return torch.stack([u for u, _ in first + second]), [loss for _, loss in first + second], private


@pytest.mark.parametrize("dp", ["none", "dpsgd"])
def test_parallel_engine_equals_sequential_in_float64(real_data_root, monkeypatch, dp):
    monkeypatch.setitem(parallel.CHUNK_FLOATS, "cpu", 1_000_000)  # 4 samples per chunk: several per step
    exp = tiny(dp=dp, train_subset=60)
    seq, seq_loss, seq_dp = _updates(exp, "sequential", real_data_root, torch.float64, monkeypatch)
    par, par_loss, par_dp = _updates(exp, "parallel", real_data_root, torch.float64, monkeypatch)
    torch.testing.assert_close(par, seq, rtol=0, atol=1e-7 * float(seq.abs().max()))
    assert par_loss == pytest.approx(seq_loss, rel=1e-9) if dp == "none" else par_loss == seq_loss == [None] * 5
    if dp == "dpsgd":  # the same budget spent, step for step, and the same noise stream left behind
        for cid in range(3):
            a, b = seq_dp.hospitals[cid], par_dp.hospitals[cid]
            assert a.steps_done == b.steps_done and a.accountant.history == b.accountant.history
            assert torch.equal(a.generator.get_state(), b.generator.get_state())
        assert par_dp.spent() == seq_dp.spent() > 0


@pytest.mark.parametrize("dp", ["none", "dpsgd"])
def test_channels_last_data_and_model_give_the_same_updates(real_data_root, monkeypatch, dp):
    exp = tiny(dp=dp, n_clients=2, train_subset=60)  # channels-last is the GPU default; CPU runs it for this test
    plain, _, _ = _updates(exp, "sequential", real_data_root, torch.float64, monkeypatch)
    last, _, _ = _updates(exp, "sequential", real_data_root, torch.float64, monkeypatch, channels_last=True)
    torch.testing.assert_close(last, plain, rtol=0, atol=1e-7 * float(plain.abs().max()))


def test_parallel_engine_run_matches_sequential_in_float32(real_data_root):
    exp = tiny(rounds=2)
    seq = fl.run_federated(exp, root=real_data_root, progress=False, engine="sequential")
    par = fl.run_federated(exp, root=real_data_root, progress=False, engine="parallel")
    assert (seq["engine"], par["engine"]) == ("sequential", "parallel")
    for a, b in zip(seq["rounds"], par["rounds"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)
        assert b["test_loss"] == pytest.approx(a["test_loss"], rel=1e-3)


def test_engine_choice_and_batchnorm_refusal(real_data_root):
    assert fl.Federation(tiny(), root=real_data_root, device="cpu", engine="auto").engine == "sequential"
    with pytest.raises(ValueError, match="BatchNorm"):
        fl.Federation(tiny(model="resnet9"), root=real_data_root, engine="parallel")
    with pytest.raises(ValueError, match="engine must be one of"):
        fl.Federation(tiny(), root=real_data_root, engine="vmap")


def test_existing_result_hashes_are_unchanged_and_bf16_is_hashed():
    exp = fl.Experiment.from_profile(CPU, n_clients=10, scheme="paper")
    assert result_path("federated", dict(exp.to_dict(), profile="cpu")).name == "federated-7ebcf4b15b.json"
    assert "precision" not in exp.to_dict()
    bf16 = fl.Experiment.from_profile(CPU, n_clients=10, scheme="paper", precision="bf16")
    assert bf16.to_dict()["precision"] == "bf16" and bf16.hash() != exp.hash()
    with pytest.raises(ValueError, match="precision 'fp16'"):
        fl.Experiment(precision="fp16")


def test_augmentation_multiplicity_in_federated_dpsgd(real_data_root):
    # hashed only when used, so every committed result keeps its file name
    assert "multiplicity" not in tiny(dp="dpsgd").to_dict()
    assert tiny(dp="dpsgd", multiplicity=2).hash() != tiny(dp="dpsgd").hash()
    with pytest.raises(ValueError, match="needs dp='dpsgd'"):
        tiny(multiplicity=2)
    with pytest.raises(ValueError, match="multiplicity must be an integer >= 1"):
        tiny(dp="dpsgd", multiplicity=0)
    # the vmap engine has no copies: 'auto' falls back to sequential even on a GPU, 'parallel' refuses
    net = tiny().model
    model = build_model(net, width=8)
    assert parallel.resolve_engine("auto", model, torch.device("cuda"), multiplicity=2) == "sequential"
    assert parallel.resolve_engine("auto", model, torch.device("cuda"), multiplicity=1) == "parallel"
    with pytest.raises(ValueError, match="no augmentation multiplicity"):
        parallel.resolve_engine("parallel", model, torch.device("cpu"), multiplicity=2)
    with pytest.raises(ValueError, match="needs backend='fast'"):
        dpsgd.RecordLevelDP(100, rounds=1, backend="opacus", multiplicity=2)
    # same noise calibration and ε spent with k = 2 copies; the copies change what is learned
    runs = {}
    for k in (1, 2):
        exp = tiny(dp="dpsgd", multiplicity=k, rounds=1)
        private, aggregator = make_plugs(exp)
        runs[k] = fl.run_federated(exp, root=real_data_root, device="cpu", private=private, aggregator=aggregator,
                                   engine="auto")
        assert runs[k]["engine"] == "sequential"
        runs[k]["z"] = [h.noise_multiplier for h in private.hospitals.values()]
        runs[k]["k"] = [h.multiplicity for h in private.hospitals.values()]
    assert runs[1]["z"] == runs[2]["z"] and runs[2]["k"] == [2, 2, 2]
    assert runs[1]["rounds"][-1]["epsilon"] == pytest.approx(runs[2]["rounds"][-1]["epsilon"], rel=EPS_TOL)
    assert runs[1]["rounds"][-1]["epsilon"] <= 6.0
    assert runs[1]["rounds"][-1]["val_loss"] != runs[2]["rounds"][-1]["val_loss"]


def test_local_sgd_is_hashed_only_when_chosen_and_trains_each_hospital_with_momentum_sgd(real_data_root,
                                                                                          monkeypatch):
    from fedmedlib import train

    assert "local_optimizer" not in tiny().to_dict() and tiny(local_optimizer="adam").hash() == tiny().hash()
    assert tiny(local_optimizer="sgd").hash() != tiny().hash()
    with pytest.raises(ValueError, match="local_optimizer 'rmsprop' is not one of"):
        tiny(local_optimizer="rmsprop")
    with pytest.raises(ValueError, match="unknown local optimizer 'rmsprop'"):
        dpsgd.RecordLevelDP(100, rounds=1, optimizer="rmsprop")
    model = build_model("dpresnet", width=8)
    assert parallel.resolve_engine("auto", model, torch.device("cuda"), optimizer="sgd") == "sequential"
    with pytest.raises(ValueError, match="StackedAdam, not local_optimizer='sgd'"):
        parallel.resolve_engine("parallel", model, torch.device("cpu"), optimizer="sgd")
    # without DP: the engine's local update is exactly train_epoch with SGD(momentum 0.9) from the global weights
    exp = tiny(rounds=1, local_optimizer="sgd", lr=0.05)
    fed = fl.Federation(exp, root=real_data_root)
    start, hospital = fl.get_flat(fed.model).clone(), fed.hospitals[0]
    update, _ = fed.local_update(hospital, start, 1)
    net = build_model("dpresnet", width=8)
    fl.set_flat(net, start)
    generator = fed.local_generator(hospital.cid, 1)
    torch.manual_seed(generator.initial_seed())
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    train.train_epoch(net, opt, fed.x[hospital.train_idx], fed.y[hospital.train_idx], batch_size=16,
                      generator=generator)
    torch.testing.assert_close(update, fl.get_flat(net) - start, rtol=0, atol=0)
    # with DP-SGD: each hospital's fresh optimiser is the one the experiment names
    made = []
    real = dpsgd.make_optimizer
    monkeypatch.setattr(dpsgd, "make_optimizer",
                        lambda name, params, lr: made.append((name, lr)) or real(name, params, lr))
    monkeypatch.setattr(dpsgd.accounting, "noise_multiplier", lambda *args, **kwargs: 1.0)  # wiring, not calibration
    exp = tiny(rounds=1, dp="dpsgd", local_optimizer="sgd", lr=0.5, clip=1.0)
    private, aggregator = make_plugs(exp)
    fl.run_federated(exp, root=real_data_root, progress=False, engine="sequential", private=private,
                     aggregator=aggregator)
    assert made == [("sgd", 0.5)] * 3
