"""The book's figures: each function takes `ax=None`, draws in one shared style, and returns the figure.

References:
    matplotlib and seaborn documentation.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

PALETTE = "colorblind"
MIN_WIDTH = 7.0  # inches: with the book's 100 dpi, wider than its 688-pixel text column


def use_style() -> None:
    """One look for every chapter."""
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    # Figures are drawn about as wide as the book's text column (8 in at 100 dpi ≈ 800 px) and saved at
    # twice that resolution, so that they are sharp on hi-dpi screens without shrinking their labels.
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 200, "axes.titleweight": "bold",
                         "axes.titlesize": 12, "figure.figsize": (8, 4.5)})
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:  # outside IPython nothing is displayed inline
        return
    set_matplotlib_formats("retina")


def _axes(ax, figsize=(8, 4.5)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def short_names(names: list[str]) -> list[str]:
    """Class names without medmnist's parenthesised details (e.g. 'immature granulocytes')."""
    return [n.split("(")[0].strip() for n in names]


def sample_grid(images: np.ndarray, labels: np.ndarray, names: list[str], per_class: int = 8, seed: int = 0):
    """A grid with one row per class and `per_class` random example images."""
    rng = np.random.default_rng(seed)
    k = len(names)
    fig, axes = plt.subplots(k, per_class, figsize=(per_class * 0.9, k * 0.95))
    for c, row in enumerate(axes):
        pool = np.flatnonzero(labels == c)
        for ax, i in zip(row, rng.choice(pool, size=per_class, replace=False)):
            ax.imshow(images[i])
            ax.set_xticks([]), ax.set_yticks([])
        row[0].set_ylabel(short_names(names)[c], rotation=0, ha="right", va="center", fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.05, left=0.25)
    return fig


def class_balance(labels_by_split: dict[str, np.ndarray], names: list[str], ax=None):
    """Grouped bars: images per class in each split."""
    fig, ax = _axes(ax, (8, 3.5))
    k = len(names)
    width = 0.8 / len(labels_by_split)
    for j, (split, labels) in enumerate(labels_by_split.items()):
        ax.bar(np.arange(k) + j * width, np.bincount(labels, minlength=k), width, label=split)
    ax.set_xticks(np.arange(k) + width * (len(labels_by_split) - 1) / 2)
    ax.set_xticklabels(short_names(names), rotation=30, ha="right")
    ax.set_ylabel("images")
    ax.legend(title="split")
    fig.tight_layout()
    return fig


def partition_heatmap(counts: np.ndarray, names: list[str], ax=None, title: str = "", normalise: bool = True):
    """Hospitals x classes heatmap: each row's class shares (normalise=True) or raw counts."""
    import seaborn as sns

    counts = np.asarray(counts)
    shown = counts / counts.sum(axis=1, keepdims=True) if normalise else counts
    fig, ax = _axes(ax, (6, 0.3 * len(counts) + 1.5))
    sns.heatmap(shown, ax=ax, cmap="viridis", vmin=0, vmax=1 if normalise else None, cbar=normalise,
                xticklabels=short_names(names), yticklabels=[f"{i} (n={n})" for i, n in enumerate(counts.sum(1))])
    ax.set_xlabel("class")
    ax.set_ylabel("hospital (size)")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=90)  # eight class names side by side: upright ones overlap
    return fig


def training_curves(results: dict[str, dict], metric: str = "val_accuracy", ax=None):
    """One line per labelled result: `metric` per epoch (a result's `history` list)."""
    fig, ax = _axes(ax)
    for label, result in results.items():
        hist = result["history"]
        ax.plot([h["epoch"] for h in hist], [h[metric] for h in hist], marker="o", ms=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric.replace("_", " "))
    ax.legend()
    fig.tight_layout()
    return fig


def privacy_utility(curves: dict[str, list[dict]], ax=None, reference: dict[str, float] | None = None,
                    title: str = "Privacy–utility trade-off"):
    """Accuracy (%) against ε on a log axis, one line per labelled list of points
    ({'epsilon', 'mean', 'std'}); ε = ∞ is drawn at the right edge, labelled '∞'; `reference` adds
    horizontal lines (e.g. {'paper, DP+': 97.78})."""
    fig, ax = _axes(ax)
    finite = [p["epsilon"] for pts in curves.values() for p in pts if np.isfinite(p["epsilon"])]
    right = 2 * max(finite) if finite else 1.0
    for label, pts in curves.items():
        xs = [p["epsilon"] if np.isfinite(p["epsilon"]) else right for p in pts]
        ys = [p["mean"] for p in pts]
        err = [p.get("std") or 0.0 for p in pts]
        ax.errorbar(xs, ys, yerr=err, marker="o", ms=4, capsize=3, label=label)
    for label, value in (reference or {}).items():
        ax.axhline(value, ls="--", lw=1, color="0.4")
        ax.annotate(label, (ax.get_xlim()[0] if finite else 0, value), textcoords="offset points",
                    xytext=(4, 3), fontsize=8, color="0.3")
    ax.set_xscale("log")
    if finite:
        ticks = sorted(set(finite)) + [right]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks[:-1]] + ["∞"])
        ax.minorticks_off()
    ax.set(xlabel="ε (record-level, δ = 1.9e-4)", ylabel="test accuracy (%)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def grid_bars(rows: list[dict], ax=None, title: str = ""):
    """Grouped bars of the reproduction grid: one group per column label, one bar per hospital count,
    error bars = std over seeds; the paper's numbers as black ticks where it has them."""
    fig, ax = _axes(ax, figsize=(8, 4))
    labels = list(dict.fromkeys(r["label"] for r in rows))
    ns = sorted({r["hospitals"] for r in rows})
    width = 0.8 / max(len(ns), 1)
    for j, n in enumerate(ns):
        for i, label in enumerate(labels):
            r = next((r for r in rows if r["label"] == label and r["hospitals"] == n), None)
            x = i - 0.4 + width * (j + 0.5)
            if r and r["n"]:
                ax.bar(x, r["mean"], width, yerr=r["std"] or 0, capsize=2, color=f"C{j}",
                       label=f"{n} hospitals" if i == 0 or not ax.get_legend_handles_labels()[1].count(
                           f"{n} hospitals") else None)
            if r and r["paper"] is not None:
                ax.plot([x - width / 2, x + width / 2], [r["paper"]] * 2, color="k", lw=2)
    ax.plot([], [], color="k", lw=2, label="paper (Table 1)")
    ax.set_xticks(range(len(labels)), [lab.replace("DP+ SecAgg+ ", "DP+ SA+\n").replace("SecAgg", "SA")
                                       for lab in labels], fontsize=8)
    ax.set(ylabel="test accuracy (%)", ylim=(0, 100), title=title)
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def privacy_budget(row: dict, curve: tuple, accuracies: dict, no_dp: dict | None = None, note: str = "",
                   axes=None, split_noise: dict | None = None):
    """Three views of one privacy budget (a `widgets.budget` row): the noise multiplier of each DP reading,
    the ε the paper's code really spends against the ε it claims (`curve` = (claimed, spent) arrays), and
    test accuracy against ε (`accuracies`: ε -> `grid.summarize` dict or None; `no_dp`: the ε = ∞ run;
    `split_noise`: the same for the noise split under SecAgg+, chapter 6's seventh column)."""
    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    fig = axes[0].figure
    noise, spent, acc = axes
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    values = [row["as_coded_noise_multiplier"], row["dpsgd_noise_multiplier"], row["client_level_noise_multiplier"]]
    noise.bar(["as coded\n(update LDP)", "as claimed\n(DP-SGD)", "client level\n(DP-FedAvg)"], values,
              color=colours[:3])
    noise.tick_params(axis="x", labelsize=8)  # three two-line labels side by side in a third of the figure
    for x, v in enumerate(values):
        noise.annotate(f"{v:.3g}", (x, v), ha="center", va="bottom", fontsize=9)
    # Fixed limits, so that frames for different ε compare by eye.
    noise.set(yscale="log", ylim=(1e-3, 1e2), ylabel="noise multiplier z = σ / clip", title="noise per step")
    claimed, real = curve
    spent.plot(claimed, real, color=colours[0], label=f"as coded, {row['rounds']} rounds")
    spent.plot(claimed, claimed, color="grey", ls="--", lw=1, label="spent = claimed")
    spent.plot([row["epsilon"]], [row["as_coded_epsilon_composed"]], "o", color=colours[3], ms=8)
    spent.set(xscale="log", yscale="log", xlabel="claimed ε", ylabel="ε really spent", title="the ε it costs")
    spent.legend(fontsize=8, loc="upper left")
    shown = sorted((e, a) for e, a in accuracies.items() if a is not None)
    if shown:
        acc.errorbar([e for e, _ in shown], [a["mean"] for _, a in shown],
                     yerr=[a["std"] or 0 for _, a in shown], fmt="o-", color=colours[1], capsize=3,
                     label="as claimed\n(local noise)")
    split = sorted((e, a) for e, a in (split_noise or {}).items() if a is not None)
    if split:
        acc.errorbar([e for e, _ in split], [a["mean"] for _, a in split], yerr=[a["std"] or 0 for _, a in split],
                     fmt="s-", color=colours[2], capsize=3, label="split noise\n(tight bound)")
        shown = shown or split  # the legend below is drawn when either series is there
    if no_dp is not None:
        acc.axhline(no_dp["mean"], color="grey", ls="--", lw=1, label="no DP")
    acc.axvline(row["epsilon"], color=colours[3], lw=2, alpha=0.6)
    if note:
        acc.text(0.5, 0.5, note, transform=acc.transAxes, ha="center", va="center", fontsize=8, wrap=True,
                 bbox=dict(boxstyle="round", fc="white", ec=colours[3]))
    acc.set(xscale="log", xlim=(min(claimed), max(claimed)), ylim=(0, 100), xlabel="ε",
            ylabel="test accuracy (%)", title="what it buys")
    if shown or no_dp is not None:
        # two-line labels keep the legend narrow: at its lower right it leaves the small-ε points in view
        acc.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"ε = {row['epsilon']:g}, δ = {row['delta']:g}, {row['rounds']} rounds, "
                 f"{row['hospitals']} hospitals", fontsize=11)
    fig.tight_layout()
    return fig


def roc_curves(curves: dict[str, tuple], ax=None, floor: float = 1e-4):
    """Membership-attack ROC curves on log-log axes (label -> (fpr, tpr)); the dashed diagonal is guessing.

    Log scales show the low-FPR corner, where an attack that is confident about a few patients lives.
    """
    fig, ax = _axes(ax, (5.5, 4.5))
    for label, (fpr, tpr) in curves.items():
        ax.plot(np.maximum(fpr, floor), np.maximum(tpr, floor), label=label)
    ax.plot([floor, 1], [floor, 1], "k--", lw=1, label="guessing")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1.05)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def epsilon_audit(rows: list[dict], ax=None, cap: float = 1e4):
    """Per defence: the ε an attack proved (bar) next to the accounted ε (marker; ∞ or > cap drawn at cap)."""
    fig, ax = _axes(ax, (7, 3.8))
    x = np.arange(len(rows))
    ax.bar(x, [r["epsilon_lb"] for r in rows], 0.6, label="proved by the attack (lower bound)")
    accounted = [min(r["accounted_epsilon"], cap) for r in rows]
    ax.scatter(x, accounted, marker="_", s=600, color="black", zorder=3, label="accounted (upper bound)")
    for xi, r in zip(x, rows):
        if r["accounted_epsilon"] > cap:
            ax.annotate("∞" if np.isinf(r["accounted_epsilon"]) else f"{r['accounted_epsilon']:.0e}",
                        (xi, cap), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylim(0, cap * 8)
    ax.set_xticks(x)
    ax.set_xticklabels([r["label"] for r in rows], rotation=20, ha="right")
    ax.set_ylabel("ε")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def image_rows(rows: dict[str, np.ndarray], notes: dict[str, list[str]] | None = None, ax=None, gap: int = 2,
               titles: list[str] | None = None):
    """A mosaic of image rows (label -> uint8 images (N, 3, H, W)); optional notes on tiles, titles on columns."""
    images = {k: np.asarray(v, dtype=np.uint8) for k, v in rows.items()}
    n_cols = max(len(v) for v in images.values())
    h, w = next(iter(images.values())).shape[-2:]
    mosaic = np.full((len(images) * (h + gap), n_cols * (w + gap), 3), 255, dtype=np.uint8)
    for r, batch in enumerate(images.values()):
        for c, img in enumerate(batch):
            mosaic[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = img.transpose(1, 2, 0)
    width, height = 1.3 * n_cols + 2.2, 1.25 * len(images) + 0.3 + 0.4 * bool(titles)
    grow = max(1.0, MIN_WIDTH / width)  # a mosaic of a few tiles is drawn larger, so it still fills the column
    fig, ax = _axes(ax, (width * grow, height * grow))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_yticks([r * (h + gap) + h / 2 for r in range(len(images))])
    ax.set_yticklabels(list(images), fontsize=9)
    ax.set_xticks([])
    ax.grid(False)
    for r, label in enumerate(images):
        for c, note in enumerate((notes or {}).get(label, [])):
            ax.text(c * (w + gap) + w / 2, r * (h + gap) + h - 1, note, ha="center", va="bottom", fontsize=7,
                    color="white", bbox=dict(facecolor="black", alpha=0.6, pad=1, lw=0))
    for c, title in enumerate(titles or []):
        ax.text(c * (w + gap) + w / 2, -1, title, ha="center", va="bottom", fontsize=8, wrap=True)
    fig.tight_layout()
    return fig


def equivalence(check: dict, ax=None):
    """Scatter of one round's federated sum (SecAgg+ over the hospitals' noise shares) against the centralized
    DP-SGD sum over the union batch (`fl.distributed.round_against_central`): the points lie on y = x."""
    fig, ax = _axes(ax, figsize=(6, 6))
    x, y = check["central_sample"], check["federated_sample"]
    ax.scatter(x, y, s=4, alpha=0.5, color="C0")
    lim = float(np.max(np.abs(np.concatenate([x, y])))) * 1.05
    ax.plot([-lim, lim], [-lim, lim], color="k", lw=1, label="y = x")
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xlabel="centralized DP-SGD: clipped sum + noise",
           ylabel="federated: SecAgg+ sum of the hospitals' shares",
           title=f"{check['hospitals']} hospitals, one round: largest gap {check['max_gap']:.1e} "
                 f"(bound {check['bound']:.1e})")
    ax.title.set_fontsize(9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def readings_summary(rows: list[dict], ax=None, title: str = ""):
    """The book's result in one figure: test accuracy (%) of each reading of the paper's claim (grid rows of one
    split and hospital count, in the order given) as bars with the std over seeds, and the paper's own number
    as a black tick where it reports one. A reading that has not run is labelled so instead of a bar."""
    fig, ax = _axes(ax, figsize=(8, 0.55 * len(rows) + 1.3))
    y = np.arange(len(rows))[::-1]
    for yi, r in zip(y, rows):
        if r["n"]:
            ax.barh(yi, r["mean"], 0.6, xerr=r["std"] or 0, capsize=3, color=f"C{0 if r['paper'] else 2}")
            ax.annotate(f"{r['mean']:.1f}", (r["mean"], yi), textcoords="offset points", xytext=(-4, 0),
                        ha="right", va="center", color="white", fontsize=9, fontweight="bold")
        else:
            ax.annotate("not yet run", (1, yi), va="center", fontsize=9, color="0.35")
        if r["paper"] is not None:
            ax.plot([r["paper"]] * 2, [yi - 0.35, yi + 0.35], color="k", lw=2.5)
    ax.set_yticks(y, [r["label"] for r in rows])
    # No legend: it would cover the bars' ends; the axis label says what the ticks are.
    ax.set(xlim=(0, 100), xlabel="test accuracy (%) at the best-validation round; black ticks: the paper's",
           title=title)
    ax.grid(axis="y", visible=False)
    fig.tight_layout()
    return fig
