"""Privacy attacks (fedmedlib.attacks): metrics exact on hand-made inputs, attacks right where the answer is known."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from fedmedlib.privacy import mechanisms
from fedmedlib.attacks import inversion as inv
from fedmedlib.attacks import membership as mia
from fedmedlib.attacks import metrics

SCORES, MEMBERS = [0.9, 0.8, 0.3, 0.1], [True, False, True, False]


def _synthetic(n=20_000, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    members = rng.random(n) < 0.5
    return rng.normal(size=n) + shift * members, members


# --- ROC, AUC, TPR at FPR --------------------------------------------------------------------------

def test_roc_curve_is_exact_on_a_hand_made_example():
    fpr, tpr, thresholds = metrics.roc_curve(SCORES, MEMBERS)
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1] and tpr.tolist() == [0, 0.5, 0.5, 1, 1]
    assert thresholds[0] == math.inf and thresholds[1:].tolist() == SCORES


def test_tied_scores_move_the_curve_diagonally_and_count_half_in_the_auc():
    fpr, tpr, _ = metrics.roc_curve([1.0, 1.0], [True, False])
    assert fpr.tolist() == [0, 1] and tpr.tolist() == [0, 1]
    assert metrics.roc_auc([1.0, 1.0], [True, False]) == 0.5


def test_a_model_with_low_loss_exactly_on_members_gives_auc_one():
    members = np.arange(200) % 2 == 0
    loss = np.where(members, 0.01, 2.0)
    assert metrics.roc_auc(-loss, members) == 1.0
    assert metrics.tpr_at_fpr(-loss, members, 0.001) == 1.0


def test_random_scores_give_auc_one_half():
    scores, members = _synthetic(shift=0.0)
    assert metrics.roc_auc(scores, members) == pytest.approx(0.5, abs=0.015)


def test_auc_agrees_with_scikit_learn_on_tied_scores():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    scores, members = _synthetic(n=3000, shift=0.7, seed=1)
    scores = np.round(scores, 1)  # many ties
    assert metrics.roc_auc(scores, members) == pytest.approx(sklearn_metrics.roc_auc_score(members, scores))


def test_tpr_at_fpr_takes_the_best_achievable_rate_without_interpolation():
    assert metrics.tpr_at_fpr(SCORES, MEMBERS, 0.5) == 1.0
    assert metrics.tpr_at_fpr(SCORES, MEMBERS, 0.49) == 0.5


@pytest.mark.parametrize("fpr", [0, 1, 1.5, -0.1, "1%"])
def test_tpr_at_fpr_rejects_rates_outside_zero_one(fpr):
    with pytest.raises(ValueError, match="fpr must lie strictly between 0 and 1"):
        metrics.tpr_at_fpr(SCORES, MEMBERS, fpr)


@pytest.mark.parametrize("scores, members, message", [
    ([0.1, 0.2, 0.3], [True, False], "3 entries but members has 2"),
    ([0.1, float("nan")], [True, False], "finite"),
    ([0.1, 0.2], [True, True], "both members"),
    ([0.1, 0.2], [2, 0], "only True/False"),
])
def test_bad_attack_inputs_raise_clear_errors(scores, members, message):
    with pytest.raises(ValueError, match=message):
        metrics.roc_auc(scores, members)


# --- Clopper–Pearson and the audited ε -----------------------------------------------------------

def test_clopper_pearson_matches_its_closed_form_at_zero_successes():
    low, high = metrics.clopper_pearson(0, 100, alpha=0.05)
    assert low == 0 and high == pytest.approx(1 - 0.025 ** (1 / 100))
    assert metrics.clopper_pearson(100, 100, 0.05) == pytest.approx((0.025 ** (1 / 100), 1.0))
    with pytest.raises(ValueError, match="successes <= trials"):
        metrics.clopper_pearson(5, 4)


def _randomised_response(epsilon, n=20_000, seed=0):
    """Each point answers "I am a member" truthfully with probability e^ε / (1 + e^ε): exactly ε-DP."""
    rng = np.random.default_rng(seed)
    members = np.arange(n) % 2 == 0
    truthful = rng.random(n) < math.exp(epsilon) / (1 + math.exp(epsilon))
    return np.where(truthful, members, ~members).astype(float), members


def test_audited_epsilon_stays_below_the_true_epsilon_and_comes_close():
    cal_scores, cal_members = _randomised_response(1.0, seed=1)
    scores, members = _randomised_response(1.0, seed=2)
    found = metrics.audit_epsilon(cal_scores, cal_members, scores, members, delta=0.0)
    assert 0.8 < found["epsilon_lb"] <= 1.0


def test_audited_epsilon_of_a_gaussian_mechanism_stays_below_its_accounted_epsilon():
    from fedmedlib import privacy

    delta, mu = 1e-5, 1.0  # scores of members shifted by one noise std: z = 1
    cal, cal_m = _synthetic(shift=mu, seed=3)
    scores, members = _synthetic(shift=mu, seed=4)
    found = metrics.audit_epsilon(cal, cal_m, scores, members, delta=delta)
    assert 0 < found["epsilon_lb"] <= privacy.gaussian_epsilon(1 / mu, delta)


def test_audited_epsilon_rises_for_a_leaking_model_and_is_zero_for_guessing():
    leaky = metrics.audit_epsilon(*_synthetic(shift=8.0, seed=5), *_synthetic(shift=8.0, seed=6), delta=1e-5)
    blind = metrics.audit_epsilon(*_synthetic(shift=0.0, seed=5), *_synthetic(shift=0.0, seed=6), delta=1e-5)
    assert leaky["epsilon_lb"] > 5 and blind["epsilon_lb"] < 0.1


def test_epsilon_lower_bound_rejects_bad_delta_and_alpha():
    with pytest.raises(ValueError, match="delta"):
        metrics.epsilon_lower_bound(SCORES, MEMBERS, 1.5, threshold=0.5)
    with pytest.raises(ValueError, match="alpha"):
        metrics.epsilon_lower_bound(SCORES, MEMBERS, 1e-5, threshold=0.5, alpha=0)


# --- Membership inference -------------------------------------------------------------------------

def test_random_halves_mark_exactly_half_of_the_pool_differently_per_model():
    members = mia.random_halves(6, 100, seed=0)
    assert (members.sum(1) == 50).all() and len({row.tobytes() for row in members}) == 6


def test_logit_confidence_is_the_log_odds_of_the_true_class():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
    model = nn.Sequential(nn.Flatten(), nn.Identity())
    phi, loss = mia.logit_confidence(model, logits, torch.tensor([0, 2]))
    p = torch.softmax(logits.double(), 1)[[0, 1], [0, 2]].numpy()
    np.testing.assert_allclose(phi, np.log(p / (1 - p)))
    np.testing.assert_allclose(loss, -np.log(p))


def test_lira_finds_members_that_the_loss_attack_misses_when_images_differ_in_difficulty():
    rng = np.random.default_rng(0)
    members = mia.random_halves(16, 2000, seed=1)
    difficulty = rng.normal(0, 5, size=2000)  # some images are easy for every model, some hard
    phi = difficulty + rng.normal(0, 0.3, size=members.shape) + 1.0 * members  # training adds +1
    lira = np.stack([mia.lira_offline(phi, members, t) for t in range(16)])
    assert metrics.roc_auc(lira, members) > 0.9 > 0.65 > metrics.roc_auc(phi, members)


def test_lira_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="must match"):
        mia.lira_offline(np.zeros((4, 10)), np.zeros((4, 9), bool), 0)


def test_defence_and_settings_validate_their_arguments():
    with pytest.raises(ValueError, match="unknown defence"):
        mia.Defence("dp")
    with pytest.raises(ValueError, match="give epsilon"):
        mia.Defence("dpsgd")
    with pytest.raises(ValueError, match="n_models must be even"):
        mia.AuditSettings(n_models=3)


def test_audit_runs_end_to_end_and_reports_the_as_coded_record_level_epsilon():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, 28, 28, generator=gen), torch.randint(0, 8, (16,), generator=gen)
    settings = mia.AuditSettings(pool_size=16, n_models=4, epochs=1, width=8, batch_size=8, eval_subset=16)
    found = mia.audit(x, y, x, y, mia.Defence("update_ldp"), settings)
    coded = mechanisms.as_coded_guarantee(1)
    assert found["accounted_epsilon"] == pytest.approx(coded["epsilon_composed_replace_one"])
    assert found["attacks"]["lira_offline"]["pairs"] == 64 and 0 <= found["attacks"]["loss"]["auc"] <= 1
    with pytest.raises(ValueError, match="pool_size=16"):
        mia.audit(x[:8], y[:8], x, y, mia.Defence(), settings)


# --- Images: PSNR, SSIM ---------------------------------------------------------------------------

def test_ssim_of_an_image_with_itself_is_one_and_falls_with_noise():
    x = torch.rand(3, 28, 28, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(3, 28, 28, generator=torch.Generator().manual_seed(1))
    assert metrics.ssim(x, x) == pytest.approx(1.0)
    assert 1 > metrics.ssim((x + 0.1 * noise).clamp(0, 1), x) > metrics.ssim((x + 0.3 * noise).clamp(0, 1), x)
    assert metrics.ssim(torch.stack([x, x]), torch.stack([x, x])) == pytest.approx(1.0)


def test_psnr_is_exact_for_a_known_error_and_infinite_for_identical_images():
    x = torch.full((3, 16, 16), 0.5)
    assert metrics.psnr(x + 0.1, x) == pytest.approx(20.0)
    assert metrics.psnr(x, x) == math.inf


def test_image_metrics_reject_mismatched_or_tiny_images():
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 9))
    with pytest.raises(ValueError, match="at least 11 pixels"):
        metrics.ssim(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))


# --- Gradient inversion ---------------------------------------------------------------------------

def test_inversion_recovers_one_image_through_a_linear_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 8))
    image = torch.rand(1, 3, 12, 12) * 2 - 1
    target = inv.batch_gradient(model, image, torch.tensor([5]))
    labels = inv.infer_labels(target[-1], 1)
    settings = inv.InversionSettings(iterations=300, lr=0.1, tv_weight=0.0, restarts=1)
    rebuilt, loss = inv.invert(model, target, labels, settings, shape=(3, 12, 12))
    assert labels.tolist() == [5] and loss < 1e-3
    assert metrics.psnr(inv.to_unit(rebuilt), inv.to_unit(image)) > 30


def test_the_bias_gradient_sign_gives_the_label_of_one_image():
    from fedmedlib.models import build_model

    torch.manual_seed(1)
    model = build_model("dpresnet", width=8)
    for label in (0, 3, 7):
        grads = inv.batch_gradient(model, torch.randn(1, 3, 28, 28), torch.tensor([label]))
        assert inv.infer_labels(grads[-1], 1).tolist() == [label]
    with pytest.raises(ValueError, match="count"):
        inv.infer_labels(grads[-1], 9)


def test_dpsgd_release_without_noise_or_clipping_is_the_plain_gradient():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.Linear(4 * 26 * 26, 8))
    x, y = torch.randn(3, 3, 28, 28), torch.tensor([0, 3, 5])
    plain = inv.batch_gradient(model, x, y)
    released = inv.dpsgd_gradient(model, x, y, clip=1e6, noise_multiplier=0.0)
    for a, b in zip(plain, released):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_update_noise_release_has_the_clip_norm_plus_noise_of_std_sigma():
    grads = [torch.randn(300_000, generator=torch.Generator().manual_seed(3))]
    released = inv.update_noise_gradient(grads, clip=7.0, sigma=0.7, generator=torch.Generator().manual_seed(4))
    signal = grads[0] * (7.0 / grads[0].norm())
    assert float((released[0] - signal).std()) == pytest.approx(0.7, rel=0.01)


def test_colour_prior_gives_reconstructions_the_public_colour_statistics():
    public = torch.rand(50, 3, 28, 28) * 0.4 - 0.2
    fixed = inv.colour_prior(torch.randn(2, 3, 28, 28) * 0.1 + 0.3, public)
    torch.testing.assert_close(fixed.mean((0, 2, 3)), public.mean((0, 2, 3)), atol=0.01, rtol=0)


def test_match_pairs_permuted_reconstructions_with_their_originals():
    originals = torch.rand(3, 3, 28, 28) * 2 - 1
    pairs = inv.match(originals[[2, 0, 1]], originals)
    assert [p["original"] for p in pairs] == [2, 0, 1] and all(p["psnr"] == math.inf for p in pairs)


def test_inversion_settings_reject_nonsense():
    with pytest.raises(ValueError, match="iterations >= 1"):
        inv.InversionSettings(iterations=0)


def test_attack_figures_draw_into_a_given_axis_and_return_its_figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fedmedlib.book import plots

    fig, ax = plt.subplots()
    assert plots.roc_curves({"attack": ([0, 0.01, 1], [0, 0.2, 1])}, ax=ax) is fig
    rows = [dict(label="no DP", epsilon_lb=0.6, accounted_epsilon=float("inf"))]
    assert plots.epsilon_audit(rows).axes[0].get_yscale() == "symlog"
    tiles = np.zeros((2, 3, 28, 28), dtype=np.uint8)
    assert plots.image_rows({"original": tiles, "rebuilt": tiles}, {"rebuilt": ["1 dB", "2 dB"]},
                            titles=["a", "b"]) is not None
    plt.close("all")
