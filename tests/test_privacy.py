"""Accounting, the ledger, DPConfig and the ε explorer (fedmedlib.privacy)."""

import math
import warnings

import pytest

from fedmedlib import privacy

DELTA = 1.9e-4


def test_gaussian_sigma_is_the_classic_formula():
    assert privacy.gaussian_sigma(6.0, 1.9e-4) == pytest.approx(math.sqrt(2 * math.log(1.25 / 1.9e-4)) / 6)
    assert privacy.gaussian_sigma(6.0, 1.9e-4) == pytest.approx(0.69887, abs=1e-5)
    assert privacy.gaussian_sigma(6.0, 1.9e-4, sensitivity=7.0) == pytest.approx(7 * 0.69887, abs=1e-4)


@pytest.mark.parametrize("accountant, expected", [("prv", 7.057), ("rdp", 7.899)])
def test_epsilon_matches_pinned_opacus_values(accountant, expected):
    assert privacy.epsilon(1.0, 1e-5, 0.1, 100, accountant=accountant) == pytest.approx(expected, abs=0.01)


def _dp_accounting_epsilon(z, q, steps, delta, kind):
    dp_accounting = pytest.importorskip("dp_accounting")
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)) if q < 1
        else dp_accounting.GaussianDpEvent(z), steps)
    acc = (dp_accounting.pld.PLDAccountant() if kind == "pld" else dp_accounting.rdp.RdpAccountant())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return acc.compose(event).get_epsilon(delta)


# Settings of this book: the paper's per-hospital DP-SGD (5/10/20 hospitals, batch 64) and client sampling.
CASES = [(0.628, 64 / 2391, 5 * 38), (0.974, 64 / 1196, 20 * 19), (1.5, 0.5, 50), (0.8, 0.02, 1000)]


@pytest.mark.parametrize("z, q, steps", CASES)
def test_prv_agrees_with_google_pld_within_2_percent(z, q, steps):
    ours = privacy.epsilon(z, DELTA, q, steps, accountant="prv")
    assert ours == pytest.approx(_dp_accounting_epsilon(z, q, steps, DELTA, "pld"), rel=0.02)


@pytest.mark.parametrize("z, q, steps", CASES)
def test_rdp_agrees_with_google_rdp_within_2_percent(z, q, steps):
    ours = privacy.epsilon(z, DELTA, q, steps, accountant="rdp")
    assert ours == pytest.approx(_dp_accounting_epsilon(z, q, steps, DELTA, "rdp"), rel=0.02)


@pytest.mark.parametrize("z, k", [(1.0, 1), (2.0, 10), (0.5, 3)])
def test_exact_gaussian_epsilon_agrees_with_google_pld(z, k):
    assert privacy.gaussian_epsilon(z, DELTA, k) == pytest.approx(_dp_accounting_epsilon(z, 1.0, k, DELTA, "pld"),
                                                                 rel=0.02)


def test_gaussian_composition_is_one_gaussian_with_multiplier_over_sqrt_k():
    assert privacy.gaussian_epsilon(2.0, DELTA, 16) == pytest.approx(privacy.gaussian_epsilon(0.5, DELTA, 1))


def test_epsilon_at_sample_rate_one_is_exact_for_both_accountants():
    exact = privacy.gaussian_epsilon(0.1, DELTA, 50)
    assert privacy.epsilon(0.1, DELTA, 1.0, 50, "prv") == pytest.approx(exact, rel=1e-12)
    assert privacy.epsilon(0.1, DELTA, 1.0, 50, "rdp") == pytest.approx(exact, rel=1e-12)


def test_paper_measured_noise_multipliers_are_reproduced():
    # Measured with Opacus 1.6 (the book's reference values): 5 clients of 2,391 images, batch 64, 5 epochs:
    # σ = 0.674 (RDP) / 0.628 (PRV).
    q, steps = 64 / 2391, 5 * math.ceil(2391 / 64)
    assert privacy.noise_multiplier(6.0, DELTA, q, steps, "prv") == pytest.approx(0.628, abs=0.01)
    assert privacy.noise_multiplier(6.0, DELTA, q, steps, "rdp") == pytest.approx(0.674, abs=0.01)


@pytest.mark.parametrize("q, steps", [(0.05, 200), (1.0, 50)])
def test_noise_multiplier_spends_just_under_the_target(q, steps):
    z = privacy.noise_multiplier(6.0, DELTA, q, steps)
    assert 6.0 - 0.02 <= privacy.epsilon(z, DELTA, q, steps) <= 6.0 + 1e-6


def test_zero_noise_spends_infinite_epsilon():
    assert privacy.epsilon(0.0, DELTA, 0.1, 10) == math.inf
    assert privacy.gaussian_epsilon(0.0, DELTA) == math.inf


@pytest.mark.parametrize("kwargs, match", [
    (dict(target_epsilon=0.0), "epsilon must be"), (dict(target_epsilon=-1.0), "epsilon must be"),
    (dict(delta=0.0), "delta must lie"), (dict(delta=1.0), "delta must lie"),
    (dict(sample_rate=0.0), "sample_rate must lie"), (dict(sample_rate=1.5), "sample_rate must lie"),
    (dict(steps=0), "steps must be"), (dict(accountant="gdp"), "unknown accountant"),
])
def test_noise_multiplier_rejects_bad_input(kwargs, match):
    args = dict(target_epsilon=6.0, delta=DELTA, sample_rate=0.1, steps=10) | kwargs
    with pytest.raises(ValueError, match=match):
        privacy.noise_multiplier(**args)


@pytest.mark.parametrize("q", [0.5, 1.0])
def test_unreachable_target_names_the_fix(q):
    with pytest.raises(ValueError, match="raise ε or δ"):
        privacy.noise_multiplier(1e-4, 1e-10, q, 100_000)


def test_ledger_composes_per_hospital_and_merges_repeats():
    ledger = privacy.PrivacyLedger(delta=DELTA)
    for _ in range(4):
        ledger.record("h0", "dpsgd", noise_multiplier=1.0, sample_rate=0.05, steps=20)
    ledger.record("h1", "update_ldp", noise_multiplier=0.0998, sample_rate=1.0, steps=1)
    assert ledger.epsilon("h0") == pytest.approx(privacy.epsilon(1.0, DELTA, 0.05, 80), rel=1e-9)
    assert ledger.epsilon("h1") == pytest.approx(privacy.gaussian_epsilon(0.0998, DELTA))
    assert ledger.epsilon("nobody") == 0.0
    assert [row["steps"] for row in ledger.summary()] == [80, 1]


def test_ledger_composes_different_mechanisms():
    ledger = privacy.PrivacyLedger(delta=DELTA)
    ledger.record("h", "a", noise_multiplier=1.0, sample_rate=0.1, steps=50)
    ledger.record("h", "b", noise_multiplier=2.0, sample_rate=0.2, steps=30)
    from opacus.accountants import PRVAccountant

    acc = PRVAccountant()
    acc.history = [(1.0, 0.1, 50), (2.0, 0.2, 30)]
    assert ledger.epsilon("h") == pytest.approx(acc.get_epsilon(DELTA), rel=1e-9)
    assert ledger.epsilon("h") > privacy.epsilon(1.0, DELTA, 0.1, 50)


def test_ledger_rejects_negative_noise():
    with pytest.raises(ValueError, match="noise_multiplier"):
        privacy.PrivacyLedger(DELTA).record("h", "x", noise_multiplier=-1, sample_rate=0.1, steps=1)


def test_dpconfig_defaults_are_the_papers_and_placements_follow_the_mode():
    cfg = privacy.DPConfig(mode="client_level")
    assert (cfg.epsilon, cfg.delta, cfg.clip, cfg.noise_placement) == (6.0, 1.9e-4, 7.0, "central")
    assert privacy.DPConfig(mode="update_ldp").noise_placement == "local"


@pytest.mark.parametrize("kwargs, match", [
    (dict(mode="ldp"), "unknown DP mode"), (dict(mode="dpsgd", epsilon=0), "epsilon"),
    (dict(mode="dpsgd", delta=2), "delta"), (dict(mode="dpsgd", clip=0), "clip"),
    (dict(mode="dpsgd", drop_noise=True), "drop_noise"),
    (dict(mode="update_ldp", noise_placement="central"), "noise_placement"),
    (dict(mode="client_level", min_survivors=3), "min_survivors"),
    (dict(mode="dpsgd", accountant="moments"), "accountant"),
])
def test_dpconfig_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        privacy.DPConfig(**kwargs)


def test_explorer_rows_carry_sigma_noise_to_signal_and_composed_epsilon():
    rows = privacy.explore([1.0, 6.0], rounds=(1, 50), clients=(10,), n_parameters=10_000)
    assert len(rows) == 4
    row = next(r for r in rows if r["epsilon"] == 6.0 and r["rounds"] == 50)
    assert row["sigma"] == pytest.approx(privacy.gaussian_sigma(6.0, DELTA))
    assert row["noise_to_signal"] == pytest.approx(row["sigma"] * 100 / 7.0)
    assert row["real_epsilon_composed"] == pytest.approx(privacy.gaussian_epsilon(row["sigma"] / 7, DELTA, 50))
    one_round = next(r for r in rows if r["epsilon"] == 6.0 and r["rounds"] == 1)
    assert one_round["client_level_noise_multiplier"] < row["client_level_noise_multiplier"]


@pytest.mark.parametrize("module", ["privacy.accounting", "privacy.mechanisms"])
def test_docstring_examples_print_their_pinned_output(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"fedmedlib.{module}"))
    assert result.attempted > 0 and result.failed == 0


def test_explain_epsilon_reports_the_as_coded_numbers(capsys):
    line = privacy.explain_epsilon(6.0, 1.9e-4, 50)
    assert line.startswith("σ = 0.699") and "over 50 rounds = 2759" in line
    assert capsys.readouterr().out.strip() == line
