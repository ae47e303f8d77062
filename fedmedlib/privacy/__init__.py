"""Differential privacy for one hospital's data: accounting, mechanisms, DP-SGD and the tuned recipe.

Rooms: `accounting` (pure functions of ε, δ, z, q, steps, and a small ledger — handed on here as the package's
face, Opacus-style), `mechanisms` (clip and noise whole updates), `dpsgd` (record-level DP-SGD, Opacus or fast),
`fastdp` (per-sample norms in one backward pass), `augment` (augmentation multiplicity), `recipe` (a DP-SGD
recipe as data), `skellam` (integer noise shares under secure aggregation). Nothing here knows about rounds.
"""

from .accounting import (ACCOUNTANTS, PAPER_CLIP, PAPER_DELTA, PAPER_EPSILON, PAPER_ROUNDS, PAPER_SENSITIVITY,
                         DPConfig, PrivacyLedger, epsilon, explain_epsilon, explore, gaussian_epsilon, gaussian_sigma,
                         history_epsilon, noise_multiplier, opacus_epsilon)

__all__ = ["ACCOUNTANTS", "DPConfig", "PAPER_CLIP", "PAPER_DELTA", "PAPER_EPSILON", "PAPER_ROUNDS",
           "PAPER_SENSITIVITY", "PrivacyLedger", "epsilon", "explain_epsilon", "explore", "gaussian_epsilon",
           "gaussian_sigma", "history_epsilon", "noise_multiplier", "opacus_epsilon"]
