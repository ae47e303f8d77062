import numpy as np
import pytest
import torch

from fedmedlib import fl
from fedmedlib.models import DPResNet


def tiny(**kw):
    base = dict(n_clients=3, scheme="iid", rounds=2, width=8, train_subset=240, eval_subset=100, seed=1)
    return fl.Experiment(**{**base, **kw})


def test_weighted_mean_on_known_vectors():
    out = fl.weighted_mean([torch.tensor([1.0, 1.0]), torch.tensor([3.0, 5.0])], [1, 3])
    assert torch.allclose(out, torch.tensor([2.5, 4.0]))
    with pytest.raises(ValueError, match="one weight per update"):
        fl.weighted_mean([torch.zeros(2)], [1, 2])
    with pytest.raises(ValueError, match="positive sum"):
        fl.weighted_mean([torch.zeros(2)], [0])


def test_flat_round_trip_and_size_check():
    net = DPResNet(width=8)
    flat = fl.get_flat(net)
    fl.set_flat(net, flat * 2)
    assert torch.allclose(fl.get_flat(net), flat * 2)
    with pytest.raises(ValueError, match="the model needs"):
        fl.set_flat(net, torch.zeros(flat.numel() + 1))


@pytest.mark.parametrize("kw, message", [
    (dict(fraction_fit=0.0), "fraction_fit must be in"),
    (dict(dp="ldp"), "dp mode 'ldp'"),
    (dict(aggregator="median"), "aggregator 'median'"),
    (dict(scheme="random"), "scheme 'random'"),
    (dict(dropout_schedule=((3, (0,)),)), "outside rounds"),
    (dict(dropout_schedule=((1, (7,)),)), "outside rounds"),
    (dict(dropout_prob=1.0), "dropout_prob"),
])
def test_bad_experiments_are_clear_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kw)


def test_more_hospitals_than_images_is_an_error(real_data_root):
    with pytest.raises(ValueError, match="hospitals but only 10 training images"):
        fl.Federation(tiny(n_clients=11, train_subset=10), root=real_data_root)


def test_sampling_honours_fraction_and_dropout_schedule(real_data_root):
    fed = fl.Federation(tiny(n_clients=6, fraction_fit=0.5, dropout_schedule=((2, (0, 1, 2, 3, 4, 5)),)),
                        root=real_data_root)
    chosen, dropped = fed.sample(1)
    assert len(chosen) == 3 and dropped == [] and chosen == fed.sample(1)[0]
    chosen2, dropped2 = fed.sample(2)
    assert dropped2 == chosen2


def test_runs_are_deterministic_and_report_best_val_round(real_data_root):
    a = fl.run_federated(tiny(), root=real_data_root, progress=False)
    b = fl.run_federated(tiny(), root=real_data_root, progress=False)
    strip = lambda r: [{k: v for k, v in h.items() if k != "seconds"} for h in r["rounds"]]  # noqa: E731
    assert strip(a) == strip(b)
    best = max(a["rounds"], key=lambda h: h["val_accuracy"])
    assert a["test_accuracy_at_best_val"] == best["test_accuracy"] and a["best_round"] == best["round"]
    assert a["device"] == "cpu" and len(a["hospital_sizes"]) == 3  # provenance is the cache's job (experiments)


def test_a_round_where_everyone_drops_leaves_the_model_unchanged(real_data_root):
    r = fl.run_federated(tiny(dropout_schedule=((2, (0, 1, 2)),)), root=real_data_root, progress=False)
    first, second = r["rounds"]
    assert second["aggregated"] == 0 and second["train_loss"] is None
    assert second["test_accuracy"] == first["test_accuracy"] and second["val_loss"] == first["val_loss"]


def test_resume_after_interruption_equals_an_uninterrupted_run(real_data_root, tmp_path, interrupted_run):
    exp = tiny(rounds=3)
    full = fl.run_federated(exp, root=real_data_root, progress=False)
    interrupted_run(exp, real_data_root, tmp_path / "ck.pt")
    resumed = fl.run_federated(exp, root=real_data_root, checkpoint=tmp_path / "ck.pt", progress=False)
    assert [h["test_loss"] for h in resumed["rounds"]] == [h["test_loss"] for h in full["rounds"]]


def test_a_resumed_run_reports_the_wall_time_of_all_its_chunks(real_data_root, tmp_path, interrupted_run):
    exp, ckpt = tiny(rounds=3), tmp_path / "ck.pt"
    assert fl.run_federated(exp, root=real_data_root, progress=False)["resumed_from_round"] == 0
    interrupted_run(exp, real_data_root, ckpt)
    state = torch.load(ckpt, weights_only=False)
    assert state["round"] == 1 and state["elapsed_s"] >= state["history"][0]["seconds"]
    torch.save(dict(state, elapsed_s=1000.0), ckpt)  # as if round 1 had taken a session
    resumed = fl.run_federated(exp, root=real_data_root, checkpoint=ckpt, progress=False)
    assert resumed["resumed_from_round"] == 1 and resumed["wall_time_s"] > 1000.0


def test_a_checkpoint_without_its_elapsed_time_counts_its_rounds_times(real_data_root, tmp_path, interrupted_run):
    exp, ckpt = tiny(rounds=3), tmp_path / "ck.pt"
    interrupted_run(exp, real_data_root, ckpt)
    state = torch.load(ckpt, weights_only=False)
    state.pop("elapsed_s")  # written before checkpoints carried it
    state["history"][0]["seconds"] = 1000.0
    torch.save(state, ckpt)
    resumed = fl.run_federated(exp, root=real_data_root, checkpoint=ckpt, progress=False)
    assert resumed["wall_time_s"] > 1000.0


def test_checkpoint_of_another_experiment_is_refused(real_data_root, tmp_path):
    fl.run_federated(tiny(rounds=1), root=real_data_root, checkpoint=tmp_path / "ck.pt", progress=False)
    with pytest.raises(ValueError, match="belongs to another experiment"):
        fl.run_federated(tiny(rounds=2), root=real_data_root, checkpoint=tmp_path / "ck.pt", progress=False)


def test_fedavg_round_equals_weighted_mean_of_local_models(real_data_root):
    exp = tiny(rounds=1, n_clients=2, scheme="paper")
    fed = fl.Federation(exp, root=real_data_root)
    start = fl.get_flat(fed.model).clone()
    ups = [fed.local_update(h, start, 1)[0] for h in fed.hospitals]
    expected = start + fl.weighted_mean(ups, [len(h.train_idx) for h in fed.hospitals])
    fed.model.load_state_dict(fl.Federation(exp, root=real_data_root).model.state_dict())
    result = fl.run_federated(exp, root=real_data_root, progress=False)
    fl.set_flat(fed.model, expected)
    assert np.isclose(result["rounds"][0]["test_loss"], fed.evaluate_global(expected)["test_loss"], rtol=1e-5)


def test_secagg_aggregate_matches_plain_mean_within_its_error_bound(real_data_root):
    from fedmedlib.fl.modes import make_plugs

    exp = tiny(rounds=1, n_clients=5, aggregator="secagg", secagg_threshold=3)
    fed = fl.Federation(exp, root=real_data_root)
    start = fl.get_flat(fed.model).clone()
    ups = [fed.local_update(h, start, 1)[0] for h in fed.hospitals[:4]]
    sizes = [float(len(h.train_idx)) for h in fed.hospitals[:4]]
    _, secagg = make_plugs(exp)
    mean, info = secagg.aggregate(ups, sizes, clients=[0, 1, 3, 4], dropped=[2])
    exact = fl.weighted_mean(ups, sizes)
    assert info["aggregator"] == "secagg" and 0 < info["secagg_error_bound"] < 1e-3
    assert (mean - exact).abs().max().item() <= info["secagg_error_bound"]


def test_secagg_round_aborts_cleanly_when_too_few_survive(real_data_root):
    from fedmedlib.fl.modes import make_plugs

    exp = tiny(rounds=2, n_clients=4, aggregator="secagg", secagg_threshold=3,
               dropout_schedule=((2, (0, 1)),))
    private, aggregator = make_plugs(exp)
    r = fl.run_federated(exp, root=real_data_root, progress=False, aggregator=aggregator)
    first, second = r["rounds"]
    assert first["aggregated"] == 4 and first["aggregator"] == "secagg"
    assert second["aggregated"] == 0 and "aborted" in second
    assert second["test_loss"] == first["test_loss"]
