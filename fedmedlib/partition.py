"""Split a training set over simulated hospitals: IID, the paper's quantity skew, Dirichlet, pathological.

References:
    Fares & Saad, arXiv 2412.00687 (2024), code `create_splits` (the "paper" scheme, reimplemented).
    Hsu et al., arXiv 1909.06335 (2019) — Dirichlet label skew, as in flwr-datasets' DirichletPartitioner.
    McMahan et al., AISTATS 2017 — pathological non-IID (each client holds a few classes).
"""

from __future__ import annotations

import numpy as np

SCHEMES = ("iid", "paper", "dirichlet", "pathological")


def partition(labels, n_clients: int, scheme: str, *, seed: int = 0, alpha: float = 0.5,
              classes_per_client: int = 2, min_size: int = 10, max_tries: int = 100) -> list[np.ndarray]:
    """Index arrays, one per client, that together use every index of `labels` exactly once.

    `seed` drives every scheme except "paper", which reproduces the authors' split (NumPy seed 42).
    """
    labels = np.asarray(labels).reshape(-1)
    n = len(labels)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}: choose one of {SCHEMES}")
    if not isinstance(n_clients, (int, np.integer)) or n_clients < 1:
        raise ValueError(f"n_clients must be a positive integer, got {n_clients!r}")
    if n_clients > n:
        raise ValueError(f"cannot split {n} samples over {n_clients} clients: use at most {n} clients")
    if scheme == "iid":
        return iid(n, n_clients, seed)
    if scheme == "paper":
        return paper_quantity_skew(n, n_clients)
    if scheme == "dirichlet":
        return dirichlet(labels, n_clients, alpha=alpha, min_size=min_size, seed=seed, max_tries=max_tries)
    return pathological(labels, n_clients, classes_per_client=classes_per_client, seed=seed)


def iid(n: int, n_clients: int, seed: int = 0) -> list[np.ndarray]:
    """A seeded shuffle cut into near-equal parts."""
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, n_clients)]


def paper_sizes(n: int, n_clients: int, ratio: float = 0.5, seed: int = 42) -> list[int]:
    """The authors' client sizes: equal ranges, then pairwise shifts of r ~ U[0, floor(n/k)*ratio)."""
    base = n // n_clients
    # The last n mod k ranges get one extra sample, as in the authors' code.
    sizes = [base + (1 if i >= n_clients - n % n_clients and n % n_clients else 0) for i in range(n_clients)]
    # Their code seeds NumPy's global generator with 42; a private RandomState(42) draws the same stream
    # without touching the caller's global state.
    rng = np.random.RandomState(seed)
    high = int(base * ratio)  # randint(high=float) truncates the bound exactly like this
    for first in range(0, n_clients - n_clients % 2, 2):
        shift = int(rng.randint(0, high)) if high > 0 else 0
        sizes[first] -= shift
        sizes[first + 1] += shift
    return sizes


def paper_quantity_skew(n: int, n_clients: int) -> list[np.ndarray]:
    """Contiguous ranges in file order with the authors' sizes: quantity skew, but IID labels on BloodMNIST."""
    bounds = np.concatenate([[0], np.cumsum(paper_sizes(n, n_clients))])
    return [np.arange(bounds[i], bounds[i + 1]) for i in range(n_clients)]


def dirichlet(labels: np.ndarray, n_clients: int, *, alpha: float = 0.5, min_size: int = 10,
              seed: int = 0, max_tries: int = 100) -> list[np.ndarray]:
    """Per class, shares over clients drawn from Dir(alpha); redrawn until every client has >= min_size."""
    alphas = np.broadcast_to(np.asarray(alpha, dtype=float), (n_clients,)).copy()
    if not np.all(np.isfinite(alphas)) or np.any(alphas <= 0):
        raise ValueError(f"alpha must be > 0 (smaller = more label skew), got {alpha!r}")
    if min_size < 0 or min_size * n_clients > len(labels):
        raise ValueError(f"min_size={min_size} x {n_clients} clients exceeds the {len(labels)} samples: "
                         "lower min_size or use fewer clients")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        for c in classes:
            members = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(alphas)
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for client, chunk in enumerate(np.split(members, cuts)):
                parts[client].append(chunk)
        result = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in result) >= min_size:
            return result
    raise ValueError(f"no Dirichlet(alpha={alpha}) draw in {max_tries} tries gave every one of {n_clients} "
                     f"clients at least min_size={min_size} samples: raise alpha, lower min_size or "
                     "use fewer clients")


def pathological(labels: np.ndarray, n_clients: int, *, classes_per_client: int = 2,
                 seed: int = 0) -> list[np.ndarray]:
    """Each client holds exactly `classes_per_client` classes; a class is split evenly among its holders."""
    classes = np.unique(labels)
    k = len(classes)
    if not 1 <= classes_per_client <= k:
        raise ValueError(f"classes_per_client must be between 1 and {k}, got {classes_per_client}")
    if n_clients * classes_per_client < k:
        raise ValueError(f"{n_clients} clients x {classes_per_client} classes cannot cover all {k} classes, "
                         "so some samples would be dropped: raise classes_per_client or the number of clients")
    rng = np.random.default_rng(seed)
    order = rng.permutation(classes)
    # Consecutive windows over a shuffled class ring: every class gets a holder, each client distinct classes.
    held = [order[(i * classes_per_client + j) % k] for i in range(n_clients) for j in range(classes_per_client)]
    held = np.asarray(held).reshape(n_clients, classes_per_client)
    parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
    for c in classes:
        holders = np.flatnonzero((held == c).any(axis=1))
        members = rng.permutation(np.flatnonzero(labels == c))
        if len(members) < len(holders):
            raise ValueError(f"class {c} has {len(members)} samples for {len(holders)} clients: use fewer clients")
        for client, chunk in zip(holders, np.array_split(members, len(holders))):
            parts[client].append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def partition_stats(labels, parts: list[np.ndarray], num_classes: int | None = None) -> np.ndarray:
    """Clients x classes matrix of sample counts."""
    labels = np.asarray(labels).reshape(-1)
    k = num_classes if num_classes is not None else int(labels.max()) + 1
    return np.stack([np.bincount(labels[p], minlength=k) for p in parts]).astype(np.int64)


def local_split(indices: np.ndarray, *, val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A hospital's own train/val split (80/20 as in the authors' code, but seeded: theirs was not)."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    indices = np.asarray(indices)
    if len(indices) < 2:
        raise ValueError(f"a client with {len(indices)} sample(s) cannot be split into train and val")
    n_train = int((1 - val_fraction) * len(indices))  # the authors' int(0.8 * n)
    n_train = min(max(n_train, 1), len(indices) - 1)
    order = np.random.default_rng(seed).permutation(len(indices))
    return np.sort(indices[order[:n_train]]), np.sort(indices[order[n_train:]])


def label_skew(counts: np.ndarray) -> np.ndarray:
    """Per client, the total-variation distance between its label mix and the pooled one (0 = IID labels)."""
    counts = np.asarray(counts, dtype=float)
    if np.any(counts.sum(axis=1) == 0):
        raise ValueError("a client with no samples has no label distribution")
    pooled = counts.sum(axis=0) / counts.sum()
    shares = counts / counts.sum(axis=1, keepdims=True)
    return 0.5 * np.abs(shares - pooled).sum(axis=1)
