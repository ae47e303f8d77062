"""The ε explorer: what a privacy budget buys (noise, the ε really spent, accuracy), live or as static frames.

The *live* panel (ε, δ, rounds, hospitals) recomputes everything in a kernel: Jupyter or Colab. The book's
HTML has no kernel, so its *static* explorer precomputes one PNG per ε and links a slider to them inside
the browser (`jslink`): moving the slider changes the figure with no Python behind the page.

References:
    ipywidgets documentation, "Embedding Jupyter Widgets in Other Contexts" (widget state, jslink).
    Abadi et al., CCS 2016 (DP-SGD) and McMahan et al., ICLR 2018 (client-level DP-FedAvg), accounted by
    fedmedlib.privacy; Fares & Saad, arXiv 2412.00687 (2024): the as-coded σ and clip 7.
"""

from __future__ import annotations

import base64
import html
import io
import math
import numbers

import numpy as np

from ..experiments import grid
from .. import privacy
from ..config import CPU

TRAIN_IMAGES = 11_959  # BloodMNIST's official training split (fedmedlib.data verifies the file)
LOCAL_TRAIN_FRACTION = 0.8  # each hospital keeps 20 % for its own validation (partition.local_split)
# The static slider stops where the grid's ε sweep has (or will have) real results: no invented points.
STATIC_EPSILONS = tuple(e for e in grid.SWEEP_EPSILONS if math.isfinite(e))
LIVE_EPSILONS = tuple(sorted(set(STATIC_EPSILONS) | {0.25, 0.75, 1.5, 3.0, 5.0, 7.0, 10.0, 12.0, 24.0, 32.0}))
LIVE_DELTAS = (1e-6, 1e-5, privacy.PAPER_DELTA, 1e-3)
SWEEP_HOSPITALS = 10  # grid.cells runs its ε sweep at 10 hospitals (the paper's headline row)
FRAME_DPI = 110  # ≈ 1100 px wide (sharp at the text column's width); seven frames keep the page under 1.5 MB
CURVE = np.geomspace(0.25, 32, 40)  # the claimed-ε axis of the "ε it costs" panel, same for every frame


def _check(epsilon, delta, rounds, hospitals, profile) -> None:
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not (math.isfinite(epsilon)
                                                                                 and epsilon > 0):
        raise ValueError(f"epsilon must be a finite number > 0 (no DP is the grid's ε = ∞ cell, not a slider "
                         f"point), got {epsilon!r}")
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, numbers.Integral) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    most = TRAIN_IMAGES // math.ceil(profile.batch_size / LOCAL_TRAIN_FRACTION)
    if isinstance(hospitals, bool) or not isinstance(hospitals, numbers.Integral) or not 1 <= hospitals <= most:
        raise ValueError(f"hospitals must be an integer in [1, {most}] (each needs at least one batch of "
                         f"{profile.batch_size} training images), got {hospitals!r}")


def hospital_records(hospitals: int) -> int:
    """Training records of a typical hospital: an equal share of the training set, less its validation 20 %."""
    return int(LOCAL_TRAIN_FRACTION * (TRAIN_IMAGES // hospitals))


def budget(epsilon: float, delta: float = privacy.PAPER_DELTA, rounds: int | None = None, hospitals: int = 10,
           *, profile=CPU, clip: float = privacy.PAPER_CLIP, accountant: str = "prv") -> dict:
    """What (ε, δ) over `rounds` rounds and `hospitals` hospitals means for each DP reading of the paper.

    as coded: σ = √(2 ln(1.25/δ))/ε per parameter, but an update's sensitivity is the clip, so z = σ/clip
    and the ε really spent composes over the rounds. As claimed: record-level DP-SGD in a typical hospital
    (Poisson batches of the profile's size, its local epochs every round: `dpsgd.RecordLevelDP`'s
    calibration). Client level: DP-FedAvg with all hospitals every round; its noise on the *mean* update
    is z·clip/hospitals.

    >>> row = budget(6.0, rounds=20, hospitals=10)
    >>> [round(row[k], 2) for k in ("as_coded_sigma", "dpsgd_noise_multiplier", "client_level_noise_multiplier")]
    [0.7, 0.85, 2.96]
    """
    rounds = profile.rounds if rounds is None else rounds
    _check(epsilon, delta, rounds, hospitals, profile)
    epsilon, delta, rounds, hospitals = float(epsilon), float(delta), int(rounds), int(hospitals)
    sigma = privacy.gaussian_sigma(epsilon, delta)
    records = hospital_records(hospitals)
    steps_per_epoch = math.ceil(records / profile.batch_size)  # Opacus' Poisson loader: q = 1 / batches
    z_dpsgd = privacy.noise_multiplier(epsilon, delta, 1.0 / steps_per_epoch,
                                       rounds * profile.local_epochs * steps_per_epoch, accountant)
    z_client = privacy.noise_multiplier(epsilon, delta, 1.0, rounds)
    return dict(epsilon=epsilon, delta=delta, rounds=rounds, hospitals=hospitals, records_per_hospital=records,
                as_coded_sigma=sigma, as_coded_noise_multiplier=sigma / clip,
                as_coded_epsilon_per_round=privacy.gaussian_epsilon(sigma / clip, delta),
                as_coded_epsilon_composed=privacy.gaussian_epsilon(sigma / clip, delta, rounds),
                dpsgd_noise_multiplier=z_dpsgd, client_level_noise_multiplier=z_client,
                client_level_noise_on_mean=z_client * clip / hospitals)


def spent_curve(delta: float, rounds: int, clip: float = privacy.PAPER_CLIP) -> tuple[np.ndarray, np.ndarray]:
    """(claimed ε, ε really spent by the as-coded mechanism over `rounds` rounds) along `CURVE`."""
    real = [privacy.gaussian_epsilon(privacy.gaussian_sigma(e, delta) / clip, delta, rounds) for e in CURVE]
    return CURVE, np.array(real)


def accuracy(epsilon: float, hospitals: int = SWEEP_HOSPITALS, *, profile=CPU, scheme: str = "paper",
             directory=None, column: str = "as_claimed", bound: str = "general") -> dict | None:
    """Test accuracy (%) of a sweep cell at ε (∞ = no DP) in `column` ('as_claimed', or 'as_should': the noise
    split under SecAgg+, its Skellam noise accounted with subsampling `bound`), mean ± std over the seeds in
    `results/`; None when no seed of it has run."""
    return grid.sweep_point(profile, epsilon, scheme=scheme, hospitals=hospitals, directory=directory,
                            column=column, bound=bound)


def split_noise_bound(epsilon: float) -> str:
    """The subsampling bound the explorer's split-noise series is read with at ε: 'tight' where the tight sweep
    runs (grid.TIGHT_SWEEP_EPSILONS), else 'general'. At ε = 16, the one point left, both bounds calibrate the
    same noise (z = 0.9314 to 6 digits; tests/test_widgets.py), so the general run is the same mechanism."""
    return "tight" if epsilon in grid.TIGHT_SWEEP_EPSILONS else "general"


def missing_note(epsilon: float, hospitals: int, profile=CPU, rounds: int | None = None) -> str:
    """Why there is no accuracy to show, and the command that would produce it."""
    if rounds is not None and rounds != profile.rounds:
        return f"results exist for {profile.rounds} rounds\n({profile.name} profile), not {rounds}"
    if hospitals != SWEEP_HOSPITALS and epsilon != privacy.PAPER_EPSILON:
        return f"the grid sweeps ε at {SWEEP_HOSPITALS} hospitals;\nat {hospitals} only ε = 6 and ∞"
    return (f"no {profile.name} result for ε = {epsilon:g} yet:\n"
            f"scripts/run_grid.py --profile {profile.name} --parts sweep")


def figure(epsilon: float, delta: float = privacy.PAPER_DELTA, rounds: int | None = None, hospitals: int = 10,
           *, profile=CPU, scheme: str = "paper", directory=None):
    """The explorer's figure for one setting (see `plots.privacy_budget`); also returns its `budget` row."""
    from . import plots

    row = budget(epsilon, delta, rounds, hospitals, profile=profile)
    same_runs = row["rounds"] == profile.rounds  # accuracy only for the runs these settings describe

    def measured(e):
        return accuracy(e, hospitals, profile=profile, scheme=scheme, directory=directory) if same_runs else None

    accuracies = {e: measured(e) for e in STATIC_EPSILONS}
    no_dp = measured(math.inf)
    here = accuracies[row["epsilon"]] if row["epsilon"] in accuracies else measured(row["epsilon"])
    note = "" if here else missing_note(row["epsilon"], hospitals, profile, row["rounds"])
    # The seventh column's sweep: its own protocol (one DP-SGD step per round), shown at its 10 hospitals, its
    # noise accounted with the tight subsampling bound (the general one asks for up to 10x the noise at small ε)
    split = {e: accuracy(e, hospitals, profile=profile, scheme=scheme, directory=directory, column="as_should",
                         bound=split_noise_bound(e))
             for e in STATIC_EPSILONS if math.isfinite(e)} if hospitals == SWEEP_HOSPITALS else {}
    plots.use_style()
    fig = plots.privacy_budget(row, spent_curve(row["delta"], row["rounds"]), accuracies, no_dp, note,
                               split_noise=split)
    return fig, dict(row, accuracy=here, note=note, accuracy_split_noise=split.get(row["epsilon"]))


def describe(row: dict) -> str:
    """One HTML line for the live panel: the numbers behind the figure."""
    acc = row.get("accuracy")
    acc_text = (f"{acc['mean']:.1f} %" + (f" ± {acc['std']:.1f}" if acc["std"] is not None else "") +
                f" ({acc['n']} seed{'s' * (acc['n'] > 1)})") if acc else row.get("note", "").replace("\n", " ")
    return (f"<b>as coded</b>: σ = {row['as_coded_sigma']:.3f} per parameter, z = σ/C = "
            f"{row['as_coded_noise_multiplier']:.4f}, really ε = {row['as_coded_epsilon_composed']:.4g} over "
            f"{row['rounds']} rounds &nbsp;|&nbsp; <b>DP-SGD</b>: z = {row['dpsgd_noise_multiplier']:.3f} for "
            f"{row['records_per_hospital']} records &nbsp;|&nbsp; <b>DP-FedAvg</b>: z = "
            f"{row['client_level_noise_multiplier']:.3f} &nbsp;|&nbsp; <b>accuracy</b>: {acc_text}")


def png(fig, dpi: int = FRAME_DPI) -> bytes:
    """The figure as PNG bytes; the figure is closed so that a notebook does not also display it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


def frames(epsilons=STATIC_EPSILONS, **settings) -> list[bytes]:
    """One PNG per ε (other settings as in `figure`), for the static explorer."""
    if not epsilons:
        raise ValueError("the static explorer needs at least one ε")
    return [png(figure(e, **settings)[0]) for e in epsilons]


def framed(png_bytes: bytes, epsilon: float) -> str:
    """One frame of the static explorer as an HTML figure: the PNG inline, an alt text, a caption."""
    data = base64.b64encode(png_bytes).decode("ascii")
    alt = (f"Three panels for ε = {epsilon:g}: the noise multiplier of each reading, the ε the paper's code "
           f"really spends against the ε it claims, and test accuracy against ε")
    caption = (f"The ε explorer at ε = {epsilon:g} (its title gives δ, rounds and hospitals): noise per step, "
               f"the ε it costs, and what it buys. Move the slider to change ε.")
    return (f'<figure style="margin:0"><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}" '
            f'style="width:100%;height:auto"><figcaption style="font-size:0.85em">{html.escape(caption)}'
            f"</figcaption></figure>")


def static_explorer(epsilons=STATIC_EPSILONS, *, start: float = privacy.PAPER_EPSILON, **settings):
    """A slider over `epsilons` linked in the browser to precomputed frames: works with no kernel."""
    import ipywidgets as w

    epsilons = tuple(epsilons)
    if start not in epsilons:
        raise ValueError(f"start={start!r} must be one of the slider's epsilons {epsilons}")
    index = epsilons.index(start)
    # Each frame is an HTML <figure> (ipywidgets' Image has no alt text): an image with an alt text and a caption.
    images = [w.HTML(value=framed(png, e), layout=w.Layout(width="100%"))
              for png, e in zip(frames(epsilons, **settings), epsilons)]
    # Stack came with ipywidgets 8; Colab may still run 7, where Tab does the same job (with tab titles).
    stack = (w.Stack if hasattr(w, "Stack") else w.Tab)(images, selected_index=index)
    slider = w.SelectionSlider(options=[(f"{e:g}", i) for i, e in enumerate(epsilons)], index=index,
                               description="ε", continuous_update=True, layout=w.Layout(width="420px"))
    panel = w.VBox([slider, stack])
    panel.link = w.jslink((slider, "index"), (stack, "selected_index"))  # client-side: no kernel in the HTML
    return panel


def explorer(*, epsilon: float = privacy.PAPER_EPSILON, delta: float = privacy.PAPER_DELTA,
             rounds: int | None = None, hospitals: int = 10, profile=CPU, scheme: str = "paper", directory=None):
    """The live panel: ε, δ, rounds and hospitals sliders; each change redraws the figure and the numbers."""
    import ipywidgets as w
    from IPython.display import Image, display

    rounds = profile.rounds if rounds is None else rounds
    _check(epsilon, delta, rounds, hospitals, profile)
    if epsilon not in LIVE_EPSILONS or delta not in LIVE_DELTAS:
        raise ValueError(f"the panel's ε are {LIVE_EPSILONS} and its δ {LIVE_DELTAS}; "
                         f"got ε={epsilon!r}, δ={delta!r} (call `figure` for any other value)")
    style = dict(continuous_update=False, style={"description_width": "80px"})
    controls = dict(epsilon=w.SelectionSlider(options=LIVE_EPSILONS, value=epsilon, description="ε", **style),
                    delta=w.SelectionSlider(options=LIVE_DELTAS, value=delta, description="δ", **style),
                    rounds=w.IntSlider(value=rounds, min=1, max=200, description="rounds", **style),
                    hospitals=w.IntSlider(value=hospitals, min=2, max=100, description="hospitals", **style))
    numbers_line, out = w.HTML(), w.Output()

    def redraw(*_):
        values = {k: c.value for k, c in controls.items()}
        with out:
            out.clear_output(wait=True)
            try:
                fig, row = figure(**values, profile=profile, scheme=scheme, directory=directory)
            except ValueError as err:  # e.g. a budget no noise level can meet: say so instead of a traceback
                numbers_line.value = f"<b>cannot compute</b>: {err}"
                return
            numbers_line.value = describe(row)
            display(Image(png(fig, dpi=90)))  # png() closes the figure, so it is shown once

    for control in controls.values():
        control.observe(redraw, names="value")
    panel = w.VBox([w.HBox([controls["epsilon"], controls["delta"]]),
                    w.HBox([controls["rounds"], controls["hospitals"]]), numbers_line, out])
    panel.controls, panel.redraw = controls, redraw  # for tests and for users who script the panel
    redraw()
    return panel
