"""Every committed record-level DP result carries what an auditor needs to recompute its ε, and Google's
dp-accounting (an accountant independent of Opacus) recomputes it to within 2 %."""

import functools
import json

import pytest

from fedmedlib.experiments.results import results_dir

# PRV (Opacus) against PLD (dp-accounting): two numerical accountants of the same mechanism. 2 %, or Opacus'
# own stated error (PRVAccountant.get_epsilon's eps_error = 0.01, absolute), whichever is larger: at ε = 0.5 the
# recorded PRV upper bound sits 0.010 (2.06 %) above the PLD value.
TOLERANCE, ABSOLUTE = 0.02, 0.011


@functools.lru_cache(maxsize=None)
def pld_epsilon(z: float, q: float, steps: int, delta: float) -> float:
    from dp_accounting import dp_event, pld

    accountant = pld.PLDAccountant()
    step = dp_event.GaussianDpEvent(z) if q == 1 else dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(z))
    accountant.compose(dp_event.SelfComposedDpEvent(step, steps))
    return accountant.get_epsilon(delta)


def record_level_files():
    for path in sorted(results_dir().glob("*.json")):
        r = json.loads(path.read_text())
        if r.get("kind") in ("dp_recipe", "dp_centralized") or (
                r.get("kind") == "federated" and r["config"]["dp"] in ("dpsgd", "distributed_dpsgd")):
            yield path.name, r


FILES = list(record_level_files())


def test_there_are_record_level_results_to_audit():
    assert len(FILES) >= 50


@pytest.mark.parametrize("name,result", FILES, ids=[n for n, _ in FILES])
def test_dp_accounting_recomputes_the_recorded_epsilon(name, result):
    if result["kind"] in ("dp_recipe", "dp_centralized"):
        audited = pld_epsilon(result["noise_multiplier"], result["sample_rate"], result["steps"], result["delta"])
        assert audited == pytest.approx(result["epsilon_spent"], rel=TOLERANCE, abs=ABSOLUTE)
        return
    audit, last = result["privacy"], result["rounds"][-1]
    for field in ("noise_multiplier", "sample_rate", "steps", "delta", "accountant"):
        assert all(field in h for h in audit["hospitals"].values()), f"{name}: hospitals lack {field}"
    if result["config"]["dp"] == "dpsgd":  # each hospital its own budget; the file records the largest ε
        worst = max(pld_epsilon(h["noise_multiplier"], h["sample_rate"], h["steps"], h["delta"])
                    for h in audit["hospitals"].values())
        assert worst == pytest.approx(last["epsilon"], rel=TOLERANCE, abs=ABSOLUTE)
    else:  # one union sample rate: the continuous cross-check, and the integer-domain bound above it
        z, steps = audit["gaussian_equivalent_noise_multiplier"], audit["steps_done"]
        gaussian = pld_epsilon(z, audit["sample_rate"], steps, audit["delta"])
        assert gaussian == pytest.approx(last["epsilon_gaussian_prv"], rel=TOLERANCE, abs=ABSOLUTE)
        assert gaussian < last["epsilon"] <= audit["epsilon_target"] * (1 + 1e-6)
