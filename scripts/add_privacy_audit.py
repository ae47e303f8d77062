"""Add, to committed record-level DP-SGD federated results that predate it, the per-hospital audit block that
new runs write themselves (`RecordLevelPlug.audit`): records, noise multiplier, sample rate, steps, δ.

The values are DERIVED from each file's own config — the hospitals' local training splits (from the labels)
and the same noise calibration the run used — not measured, and the block says so. Run once:
    python scripts/add_privacy_audit.py [--check]
`--check` only reports which files lack the block. File names (config hashes) do not change.
"""

import argparse
import json
import math

import numpy as np

from fedmedlib import data, fl, privacy
from fedmedlib.experiments.results import results_dir

SOURCE = ("derived after the run by scripts/add_privacy_audit.py from this file's config: local training "
          "splits from the labels, noise multipliers from the same calibration (privacy.noise_multiplier)")


def audit_for(config: dict) -> dict:
    fields = {k: (tuple((r, tuple(ids)) for r, ids in v) if k == "dropout_schedule" else
                  tuple(tuple(x) for x in v) if k == "extra" else v) for k, v in config.items()}
    exp = fl.Experiment(**fields)
    if not hasattr(audit_for, "labels"):
        audit_for.labels = data.load_bloodmnist("train")[1]
    labels = audit_for.labels
    train_labels = labels[data.subset_indices(len(labels), exp.train_subset, exp.seed)]
    hospitals = {}
    for cid, (tr, _) in enumerate(fl.hospital_indices(exp, np.asarray(train_labels))):
        n = len(tr)
        per_epoch = math.ceil(n / min(exp.batch_size, n))
        steps = exp.rounds * exp.local_epochs * per_epoch
        z = privacy.noise_multiplier(exp.epsilon, exp.delta, 1.0 / per_epoch, steps, "prv")
        hospitals[str(cid)] = dict(n_records=n, noise_multiplier=z, sample_rate=1.0 / per_epoch, steps=steps,
                                   delta=exp.delta, accountant="prv")
    return dict(accountant="prv", delta=exp.delta, epsilon_target=exp.epsilon, hospitals=hospitals, source=SOURCE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    for path in sorted(results_dir().glob("federated-*.json")):
        result = json.loads(path.read_text())
        if result["config"]["dp"] != "dpsgd" or "privacy" in result:
            continue
        if args.check:
            print("lacks an audit block:", path.name)
            continue
        result["privacy"] = audit_for(result["config"])
        path.write_text(json.dumps(result, indent=1))
        print("audited", path.name, flush=True)


if __name__ == "__main__":
    main()
