import copy

import pytest
import torch
from torch import nn

from fedmedlib.experiments import runs
from fedmedlib.privacy import fastdp
from fedmedlib.privacy import recipe as dprecipe
from fedmedlib import privacy
from fedmedlib.augment import augment
from fedmedlib.models import build_model

# Accountant outputs are compared with a stated tolerance, never exactly: the same ε computed in another
# process (a Flower worker) or another order differs in its last digit (5.995327573578496 vs ...4946).
EPS_TOL = 1e-9


def _brute_force_clipped_sum(net, x_copies, y, k, clip):
    """Per sample: the mean gradient over its k copies, clipped to `clip`, summed over samples."""
    total = [torch.zeros_like(p) for p in net.parameters()]
    for i in range(len(y)):
        net.zero_grad()
        out = net(x_copies[i * k:(i + 1) * k])
        nn.functional.cross_entropy(out, y[i].repeat(k)).backward()  # mean over the copies
        grads = [p.grad.detach().clone() for p in net.parameters()]
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
        scale = min(1.0, clip / (float(norm) + 1e-6))
        total = [t + scale * g for t, g in zip(total, grads)]
    return total


@pytest.mark.parametrize("strategy", ["ghost", "materialise", "grouped", "auto"])
def test_multiplicity_clips_each_sample_once_after_averaging_its_copies(strategy):
    torch.manual_seed(0)
    net = build_model("dpresnet", width=16)
    g = torch.Generator().manual_seed(3)
    x, y, k = torch.randn(5, 3, 28, 28, generator=g), torch.randint(0, 8, (5,), generator=g), 3
    copies = augment(x, k, generator=g)
    expected = _brute_force_clipped_sum(copy.deepcopy(net), copies, y, k, clip=0.5)
    tape = fastdp.LayerTape(net)
    sums, norms, _ = fastdp.clipped_gradient_sum(net, tape, copies, y, 0.5, strategy=strategy, multiplicity=k)
    tape.close()
    assert len(norms) == len(y)  # one norm per sample, not per copy
    for p, e in zip(net.parameters(), expected):
        assert torch.allclose(sums[p], e, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("strategy", ["ghost", "materialise", "grouped", "auto"])
@pytest.mark.parametrize("k", [1, 2])
def test_weight_standardized_convs_give_the_brute_force_clipped_sum(strategy, k):
    # The fast path sees gradients with respect to the standardised filters; the trained weight's per-sample
    # gradients (what is clipped) go through the standardisation's Jacobian. Autograd is the reference.
    torch.manual_seed(0)
    net = build_model("dpresnet", width=16, weight_standardization=True)
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(4, 3, 28, 28, generator=g), torch.randint(0, 8, (4,), generator=g)
    copies = augment(x, k, generator=g) if k > 1 else x
    expected = _brute_force_clipped_sum(copy.deepcopy(net), copies, y, k, clip=0.5)
    tape = fastdp.LayerTape(net)
    sums, norms, _ = fastdp.clipped_gradient_sum(net, tape, copies, y, 0.5, strategy=strategy, multiplicity=k)
    tape.close()
    assert len(norms) == len(y)
    for p, e in zip(net.parameters(), expected):
        assert torch.allclose(sums[p], e, atol=1e-5, rtol=1e-4)


def test_multiplicity_needs_k_copies_of_every_sample():
    net = build_model("dpresnet", width=16)
    tape = fastdp.LayerTape(net)
    with pytest.raises(ValueError, match="k·len"):
        fastdp.clipped_gradient_sum(net, tape, torch.randn(7, 3, 28, 28), torch.zeros(3, dtype=torch.long), 1.0,
                                    multiplicity=2)


def test_augment_shapes_order_and_determinism():
    x = torch.arange(2 * 3 * 28 * 28, dtype=torch.float32).reshape(2, 3, 28, 28)
    a = augment(x, 4, generator=torch.Generator().manual_seed(0), keep_first=True)
    b = augment(x, 4, generator=torch.Generator().manual_seed(0), keep_first=True)
    assert a.shape == (8, 3, 28, 28) and torch.equal(a, b)
    assert torch.equal(a[0], x[0]) and torch.equal(a[4], x[1])  # each sample's first copy kept as is
    # flips and quarter turns permute pixels: each unshifted copy keeps its sample's pixel multiset
    flat = augment(x, 4, generator=torch.Generator().manual_seed(1), shift=0)
    for i in range(8):
        assert torch.equal(flat[i].flatten().sort().values, x[i // 4].flatten().sort().values)


@pytest.mark.parametrize("kwargs, match", [(dict(k=0), "k >= 1"), (dict(k=2, shift=-1), "shift"),
                                           (dict(k=1.5), "integer k")])
def test_augment_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        augment(torch.zeros(1, 3, 28, 28), **kwargs)


def test_augment_rejects_non_square_batches():
    with pytest.raises(ValueError, match="square"):
        augment(torch.zeros(3, 28, 28), 2)


@pytest.mark.parametrize("changes, match", [(dict(optimizer="rmsprop"), "optimizer"), (dict(ema=1.0), "ema"),
                                            (dict(multiplicity=0), ">= 1"), (dict(clip=0), "clip")])
def test_recipe_rejects_bad_values(changes, match):
    with pytest.raises(ValueError, match=match):
        dprecipe.DPRecipe(**changes)


def test_a_plan_is_accountable_within_its_budget():
    recipe = dprecipe.DPRecipe(batch_size=1024, epochs=40)
    p = dprecipe.plan(recipe, 11959, 6.0, 1.9e-4)
    assert p["steps_per_epoch"] == 12 and p["steps"] == 480 and p["sample_rate"] == pytest.approx(1 / 12)
    assert privacy.epsilon(p["noise_multiplier"], 1.9e-4, p["sample_rate"], p["steps"]) <= 6.0
    with pytest.raises(ValueError, match="batch_size"):
        dprecipe.plan(recipe, 500, 6.0, 1.9e-4)


def test_ema_is_post_processing_it_changes_neither_training_nor_accounting(real_data_root):
    base = dprecipe.DPRecipe(batch_size=64, epochs=2, multiplicity=2, physical_batch=40)
    runs = [dprecipe.train_recipe(base.replace(ema=ema), seed=0, train_subset=256, eval_subset=128,
                                  root=real_data_root, progress=False) for ema in (0.0, 0.9)]
    plain, averaged = runs
    assert plain["steps"] == averaged["steps"] == 2 * 4
    assert plain["noise_multiplier"] == averaged["noise_multiplier"]
    assert plain["epsilon_spent"] == pytest.approx(averaged["epsilon_spent"], rel=EPS_TOL)
    assert plain["epsilon_spent"] <= 6.0
    # the same noisy steps were taken: the training losses match exactly, the evaluated weights differ
    assert [h["train_loss"] for h in plain["history"]] == [h["train_loss"] for h in averaged["history"]]
    assert [h["val_loss"] for h in plain["history"]] != [h["val_loss"] for h in averaged["history"]]


def test_ema_warms_up_so_early_averages_follow_the_weights():
    avg, net = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        avg.weight.fill_(0.0), net.weight.fill_(1.0)
    dprecipe._ema_update(avg, net, 0.999, step=0)  # decay min(0.999, 1/10) = 0.1
    assert torch.allclose(avg.weight, torch.full_like(avg.weight, 0.9))
    dprecipe._ema_update(avg, net, 0.5, step=10_000)  # late: the requested decay
    assert torch.allclose(avg.weight, torch.full_like(avg.weight, 0.95))


def test_the_tuned_preset_is_a_valid_reasoned_recipe_that_spends_at_most_epsilon_6():
    from fedmedlib.config import DP_TUNED, DP_TUNED_REASONS

    recipe = dprecipe.tuned()
    fields = set(recipe.to_dict()) - {"name"}
    assert set(DP_TUNED) == fields == set(DP_TUNED_REASONS)  # every knob set, every value explained
    assert all(len(reason) > 20 for reason in DP_TUNED_REASONS.values())
    p = dprecipe.plan(recipe, 11959, 6.0, 1.9e-4)  # the full BloodMNIST training set
    assert (p["steps_per_epoch"], p["steps"]) == (12, 360)
    assert privacy.epsilon(p["noise_multiplier"], 1.9e-4, p["sample_rate"], p["steps"]) <= 6.0
    # an accountant from another library agrees that (z, q, steps) stays within the budget (PLD, Google)
    dp_accounting = pytest.importorskip("dp_accounting")
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(p["sample_rate"], dp_accounting.GaussianDpEvent(p["noise_multiplier"])),
        p["steps"])
    assert dp_accounting.pld.PLDAccountant().compose(event).get_epsilon(1.9e-4) <= 6.0 * 1.01


def test_weight_standardization_is_hashed_only_when_set(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDMED_RESULTS", str(tmp_path))
    base = dprecipe.DPRecipe(batch_size=64, epochs=1)
    keys = []
    for recipe in (base, base.replace(weight_standardization=True)):
        with pytest.raises(FileNotFoundError) as missing:
            runs.dp_recipe(recipe, allow_run=False)
        keys.append(str(missing.value))
    assert keys[0] != keys[1]
    with pytest.raises(ValueError, match="weight_standardization must be True or False"):
        dprecipe.DPRecipe(weight_standardization=1)
