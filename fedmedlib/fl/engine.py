"""FedAvg over simulated hospitals, in one process: sampling, dropouts, DP hooks, pluggable aggregation.

References:
    McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data", AISTATS 2017.
    Fares & Saad, arXiv 2412.00687 (2024), code: fresh Adam per round, 80/20 local split, test every round.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import partition as _partition
from ..models import build_model, count_parameters
from ..train import _progress_enabled, evaluate, load_split_tensors, make_optimizer, resolve_device, train_epoch
from . import parallel as _parallel
from .experiment import Experiment
from .flat import get_flat, set_flat, weighted_mean

def round_rng(seed: int, rnd: int, client: int = -1) -> np.random.Generator:
    """Independent randomness per (seed, round, client): a resumed run draws exactly what it would have."""
    return np.random.default_rng([seed, rnd, client + 1])


@dataclass
class Hospital:
    cid: int
    train_idx: torch.Tensor
    val_idx: torch.Tensor


def hospital_indices(exp: Experiment, labels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each hospital's (local training, local validation) indices into the experiment's training images,
    whose labels are `labels`: the partition, then each hospital's own split. Needs labels only, so image
    counts can be planned without loading images."""
    if exp.n_clients > len(labels):
        raise ValueError(f"{exp.n_clients} hospitals but only {len(labels)} training images: use fewer")
    parts = _partition.partition(labels, exp.n_clients, exp.scheme, seed=exp.seed, alpha=exp.alpha,
                                 classes_per_client=exp.classes_per_client)
    out = []
    for cid, part in enumerate(parts):
        if len(part) < 2:
            raise ValueError(f"hospital {cid} got {len(part)} images: too few for a train/val split; "
                             "use fewer hospitals, more data, or a larger min_size")
        out.append(_partition.local_split(part, seed=exp.seed * 1000 + cid))
    return out


def images_per_round(exp: Experiment, labels: dict) -> dict:
    """Images a round trains (summed over hospitals and local epochs) and evaluates (the hospitals' validation
    splits and the test set), from the official splits' `labels` ({'train': ..., 'test': ...}) alone."""
    from ..data import subset_indices

    train_labels = labels["train"][subset_indices(len(labels["train"]), exp.train_subset, exp.seed)]
    splits = hospital_indices(exp, train_labels)
    n_test = len(subset_indices(len(labels["test"]), exp.eval_subset, 0))
    return dict(trained=exp.local_epochs * sum(len(tr) for tr, _ in splits),
                evaluated=sum(len(va) for _, va in splits) + n_test)


class Federation:
    """The data, the hospitals and one reusable model on one device; `play_round` plays a round."""

    def __init__(self, exp: Experiment, *, device="auto", root=None, private: Callable | None = None,
                 aggregator=None, engine: str = "sequential", channels_last: bool | None = None):
        self.exp, self.device = exp, resolve_device(device)
        torch.manual_seed(exp.seed)
        self.x, self.y = load_split_tensors("train", exp.train_subset, exp.seed, self.device, root)
        self.x_test, self.y_test = load_split_tensors("test", exp.eval_subset, 0, self.device, root)
        splits = hospital_indices(exp, self.y.cpu().numpy())
        self.hospitals = [Hospital(cid, *(torch.as_tensor(i, device=self.device) for i in (tr, va)))
                          for cid, (tr, va) in enumerate(splits)]
        self.val_idx = torch.cat([h.val_idx for h in self.hospitals])
        self.model = build_model(exp.model, width=exp.width).to(self.device)
        # channels-last convolutions are faster on GPUs (tensor cores) and not on this CPU (909 vs 930 images/s
        # fp32, 364 vs 1,789 bf16, measured): on by default on CUDA only. Same numbers up to float rounding.
        if self.device.type == "cuda" if channels_last is None else channels_last:
            self.model.to(memory_format=torch.channels_last)
            self.x, self.x_test = (t.contiguous(memory_format=torch.channels_last) for t in (self.x, self.x_test))
        self.private = private  # a DP plug from fedmedlib.privacy (None = no DP)
        self.aggregator = aggregator
        self.engine = _parallel.resolve_engine(engine, self.model, self.device, multiplicity=exp.multiplicity,
                                               optimizer=exp.local_optimizer)

    def local_generator(self, cid: int, rnd: int) -> torch.Generator:
        """The batch order of hospital `cid` in round `rnd` (both engines draw it from here)."""
        return torch.Generator().manual_seed(int(round_rng(self.exp.seed, rnd, cid).integers(2**62)))

    def local_updates(self, cids: list[int], global_flat: torch.Tensor, rnd: int) -> list[tuple]:
        """(update, loss) of each hospital in `cids`: one after another, or all at once (engine='parallel')."""
        if self.engine == "parallel" and cids:
            return _parallel.local_updates(self, cids, global_flat, rnd)
        return [self.local_update(self.hospitals[c], global_flat, rnd) for c in cids]

    def local_update(self, hospital: Hospital, global_flat: torch.Tensor, rnd: int) -> tuple[torch.Tensor, float]:
        """Train from the global weights on one hospital's data; return (new - global, mean loss)."""
        set_flat(self.model, global_flat)
        x, y = self.x[hospital.train_idx], self.y[hospital.train_idx]
        generator = self.local_generator(hospital.cid, rnd)
        torch.manual_seed(generator.initial_seed())
        if self.private is not None and hasattr(self.private, "local_train"):
            loss = self.private.local_train(self.model, x, y, hospital.cid, rnd, generator)
        else:
            # A fresh Adam each round, as in the authors' client code.
            optimizer = make_optimizer(self.exp.local_optimizer, self.model.parameters(), self.exp.lr)
            losses = [train_epoch(self.model, optimizer, x, y, batch_size=self.exp.batch_size, generator=generator,
                                  precision=self.exp.precision) for _ in range(self.exp.local_epochs)]
            loss = float(np.mean(losses))
        return get_flat(self.model) - global_flat, loss

    def sample(self, rnd: int) -> tuple[list[int], list[int]]:
        """Clients asked to train this round, and those of them that drop out before sending."""
        rng = round_rng(self.exp.seed, rnd)
        k = max(1, int(round(self.exp.fraction_fit * self.exp.n_clients)))
        chosen = sorted(rng.choice(self.exp.n_clients, size=k, replace=False).tolist())
        scheduled = set(dict(self.exp.dropout_schedule).get(rnd, ()))
        dropped = [c for c in chosen if c in scheduled or rng.random() < self.exp.dropout_prob]
        return chosen, dropped

    def summary(self, history: list[dict], best: dict, started: float, *, earlier_s: float = 0.0,
                resumed_from_round: int = 0, **extra) -> dict:
        """The JSON result of a run: every round, the test accuracy at the best-validation round, provenance.

        `earlier_s`: the wall time of the chunks before a resume at `resumed_from_round`, so that wall_time_s is
        the whole run's.
        """
        exp = self.exp
        return dict(
            kind="federated", **extra, resumed_from_round=resumed_from_round, config=exp.to_dict(),
            experiment_hash=exp.hash(), seed=exp.seed,
            n_parameters=count_parameters(self.model),
            hospital_sizes=[len(h.train_idx) + len(h.val_idx) for h in self.hospitals],
            rounds=history, best_round=best["round"], val_accuracy_best=best["val_accuracy"],
            test_accuracy_at_best_val=best["test_accuracy"], test_accuracy_last=history[-1]["test_accuracy"],
            seconds_per_round=float(np.mean([h["seconds"] for h in history])),
            wall_time_s=earlier_s + time.perf_counter() - started, device=str(self.device),
        )

    def evaluate_global(self, flat: torch.Tensor) -> dict:
        set_flat(self.model, flat)
        val = evaluate(self.model, self.x[self.val_idx], self.y[self.val_idx], precision=self.exp.precision)
        test = evaluate(self.model, self.x_test, self.y_test, precision=self.exp.precision)
        return dict(val_loss=val["loss"], val_accuracy=val["accuracy"], test_loss=test["loss"],
                    test_accuracy=test["accuracy"])


def _plain_aggregate(updates, weights, *, clients=None, dropped=None):
    return weighted_mean(updates, weights), {"aggregator": "plain"}


def play_round(fed: Federation, global_flat: torch.Tensor, rnd: int, *, private=None,
               aggregate=None) -> tuple[torch.Tensor, dict]:
    """One FedAvg round: sample, train (`fed.engine`), privatize, aggregate, evaluate -> (new global, record)."""
    if private is not None and hasattr(private, "play_round"):  # a round of its own (distributed_dpsgd)
        return private.play_round(fed, global_flat, rnd)
    aggregate, t0 = aggregate or _plain_aggregate, time.perf_counter()
    chosen, dropped = fed.sample(rnd)
    survivors = [c for c in chosen if c not in dropped]
    updates, weights, losses = [], [], []
    for cid, (update, loss) in zip(survivors, fed.local_updates(survivors, global_flat, rnd)):
        if private is not None and hasattr(private, "privatize_update"):
            update = private.privatize_update(update, cid, rnd)
        updates.append(update)
        n_examples = float(len(fed.hospitals[cid].train_idx))
        weights.append(private.weight(cid, n_examples) if hasattr(private, "weight") else n_examples)
        losses.append(loss)
    info = {}
    if updates:
        mean, info = aggregate(updates, weights, clients=survivors, dropped=dropped)
        if mean is not None:  # None: the aggregation protocol aborted this round
            if private is not None and hasattr(private, "server_noise"):
                mean = private.server_noise(mean, rnd, len(updates))
            global_flat = global_flat + mean.to(global_flat.device, global_flat.dtype)
    metrics = fed.evaluate_global(global_flat)
    record = dict(round=rnd, clients=chosen, dropped=dropped,
                  aggregated=0 if info.get("aborted") else len(updates),
                  train_loss=float(np.mean(reported)) if (reported := [x for x in losses if x is not None])
                  else None, **metrics, seconds=time.perf_counter() - t0)
    if private is not None and hasattr(private, "spent"):
        record["epsilon"] = private.spent()
    record.update({k: v for k, v in info.items() if isinstance(v, (int, float, str, bool))})
    return global_flat, record


def run_federated(exp: Experiment, *, device="auto", root=None, checkpoint: str | Path | None = None,
                  progress: bool | None = None, private=None, aggregator=None, engine: str = "auto") -> dict:
    """Play `exp.rounds` FedAvg rounds; return a JSON-serialisable history with provenance.

    The global model is evaluated every round on the official test set and on the union of the hospitals'
    local validation splits; the reported accuracy is the test accuracy at the round with the best
    validation accuracy (and, separately, at the last round). With `checkpoint`, the state after every round
    is saved there and a later call with the same experiment resumes from it. `engine` (fedmedlib.fl.parallel):
    'sequential' trains the hospitals one after another, 'parallel' all at once (vmap; equal up to float
    rounding, so not hashed, but recorded in the result), 'auto' = parallel on a GPU, sequential on a CPU.
    """
    started = time.perf_counter()
    fed = Federation(exp, device=device, root=root, private=private, aggregator=aggregator, engine=engine)
    aggregate = aggregator.aggregate if aggregator is not None else _plain_aggregate
    if exp.aggregator == "secagg" and aggregator is None:
        raise ValueError("aggregator='secagg' needs a SecAgg aggregator object (fedmedlib.secagg)")
    global_flat = get_flat(fed.model).clone()
    state = dict(round=0, history=[], best=None, best_flat=None)
    earlier_s = 0.0
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt and ckpt.is_file():
        state = torch.load(ckpt, map_location=fed.device, weights_only=False)
        if state["experiment_hash"] != exp.hash():
            raise ValueError(f"checkpoint {ckpt} belongs to another experiment (hash {state['experiment_hash']}, "
                             f"this one {exp.hash()}): delete it or pass another checkpoint path")
        global_flat = state["global_flat"].to(fed.device)
        # A checkpoint older than this field knows only its rounds' own times (set-up not counted).
        earlier_s = state.get("elapsed_s", sum(h["seconds"] for h in state["history"]))
        if private is not None and hasattr(private, "load_state_dict"):
            private.load_state_dict(state["private"])
    from tqdm.auto import tqdm

    resumed_from_round = state["round"]
    rounds = range(state["round"] + 1, exp.rounds + 1)
    for rnd in tqdm(rounds, desc=f"FedAvg {exp.n_clients} hospitals", disable=not _progress_enabled(progress)):
        global_flat, record = play_round(fed, global_flat, rnd, private=private, aggregate=aggregate)
        state["history"].append(record)
        evaluated = "val_accuracy" in record  # every round, or every exp.eval_every rounds
        if evaluated and (state["best"] is None or record["val_accuracy"] > state["best"]["val_accuracy"]):
            state["best"], state["best_flat"] = record, global_flat.detach().clone()
        state["round"] = rnd
        if ckpt:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            payload = dict(state, experiment_hash=exp.hash(), global_flat=global_flat.detach().cpu(),
                           elapsed_s=earlier_s + time.perf_counter() - started)
            if private is not None and hasattr(private, "state_dict"):
                payload["private"] = private.state_dict()
            torch.save(payload, ckpt.with_suffix(".tmp"))
            ckpt.with_suffix(".tmp").replace(ckpt)

    audit = private.audit() if private is not None and hasattr(private, "audit") else {}
    return fed.summary(state["history"], state["best"], started, earlier_s=earlier_s, engine=fed.engine,
                       resumed_from_round=resumed_from_round, **(dict(privacy=audit) if audit else {}))
