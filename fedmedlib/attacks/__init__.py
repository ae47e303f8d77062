"""Privacy attacks that measure what the defences leave: membership inference and gradient inversion.

References:
    Shokri et al., IEEE S&P 2017; Carlini et al., IEEE S&P 2022 (membership inference, LiRA).
    Zhu et al., NeurIPS 2019; Geiping et al., NeurIPS 2020 (gradient inversion).
    Jagielski et al., NeurIPS 2020; Nasr et al., IEEE S&P 2021 (auditing DP with attacks).
"""

from . import inversion, membership, metrics
from .metrics import audit_epsilon, clopper_pearson, psnr, roc_auc, roc_curve, ssim, tpr_at_fpr

__all__ = ["audit_epsilon", "clopper_pearson", "inversion", "membership", "metrics", "psnr", "roc_auc",
           "roc_curve", "ssim", "tpr_at_fpr"]
