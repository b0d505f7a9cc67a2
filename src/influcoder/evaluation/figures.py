"""The figures of the evaluation report (:mod:`influcoder.evaluation.report`), as PNG files.

* :func:`pr_figure`: precision-recall curves for finding the planted samples, one panel per
  AUPRC aggregate, with the positive rate drawn as the chance line;
* :func:`scatter_figure`: predicted against ground-truth scores, one small panel per method;
* :func:`cost_figure`: attribution time, preparation time and storage per sample, per method;
* :func:`group_figure`: each method's group fidelity (``evaluate --group-by``).

Figures are drawn with matplotlib's object API (``matplotlib.figure.Figure``, Agg canvas), so
nothing touches pyplot's global state or needs a display; matplotlib is imported only when a
figure is drawn. Scatter plots subsample to at most ``max_points`` (seeded) so a large pool
stays a small PNG. Files are written atomically.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from influcoder import metrics
from influcoder.evaluation.evaluate import expected_random_auprc
from influcoder.io.atomic import atomic_write_bytes
from influcoder.io.tables import format_bytes, format_seconds, format_value

DPI = 110
MAX_SCATTER_COLUMNS = 4
#: How wide a range (max / min) of positive values must be before an axis goes logarithmic.
LOG_SCALE_RANGE = 20.0


def method_colors(names: Sequence[str]) -> dict[str, Any]:
    """One colour per method, the same in every figure."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def save_png(fig, path: Path) -> None:
    """``fig`` as a PNG at ``path``, written atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def pr_figure(
    path: Path,
    method_scores: Mapping[str, np.ndarray],
    labels: np.ndarray,
    colors: Mapping[str, Any],
) -> None:
    """Precision-recall curves of finding the ``labels`` by each method's pool score, one
    panel per :data:`~influcoder.metrics.AUPRC_AGGREGATES` entry."""
    from matplotlib.figure import Figure

    rate = float(labels.mean())
    chance = expected_random_auprc(labels.size, int(labels.sum()))
    fig = Figure(figsize=(11, 4.4 + 0.22 * len(method_scores)), layout="constrained")
    axes = fig.subplots(1, len(metrics.AUPRC_AGGREGATES), sharey=True)
    # Earlier curves are drawn wider, so a curve hidden under a later one still shows.
    widths = np.linspace(3.2, 1.4, len(method_scores)) if len(method_scores) > 1 else [1.6]
    for ax, how in zip(axes, metrics.AUPRC_AGGREGATES):
        for (name, scores), width in zip(method_scores.items(), widths):
            pool_scores = metrics.aggregate_scores(scores, how)
            precision, recall = metrics.precision_recall_curve(labels, pool_scores)
            ap = metrics.auprc(labels, pool_scores)
            ax.step(
                recall,
                precision,
                where="post",
                color=colors[name],
                lw=width,
                alpha=0.9,
                label=f"{name} (AUPRC {ap:.3f})",
            )
        ax.axhline(
            rate,
            color="grey",
            ls="--",
            lw=1,
            label=f"chance: {rate:.1%} positives (random AUPRC {chance:.3f})",
        )
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1.03),
            xlabel="recall (share of planted samples found)",
            title=f"pool score = {how} over queries",
        )
        ax.grid(alpha=0.3)
        ax.legend(
            fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=2, frameon=False
        )
    axes[0].set_ylabel("precision (share of retrieved that are planted)")
    fig.suptitle(f"Finding the {int(labels.sum())} planted samples among {labels.size}")
    save_png(fig, path)


def scatter_figure(
    path: Path,
    gt: np.ndarray,
    method_scores: Mapping[str, np.ndarray],
    rows_by_name: Mapping[str, Mapping[str, Any]],
    labels: np.ndarray | None,
    colors: Mapping[str, Any],
    max_points: int,
    seed: int,
) -> None:
    """Each method's scores against ``gt`` over (pool, query) pairs, one panel per method
    titled with its Spearman figures from ``rows_by_name``; planted pool samples in black."""
    from matplotlib.figure import Figure

    n_query = gt.shape[1]
    flat = np.arange(gt.size)
    if gt.size > max_points:
        flat = np.sort(np.random.default_rng(seed).choice(gt.size, max_points, replace=False))
    pool_rows = flat // n_query
    planted = labels[pool_rows].astype(bool) if labels is not None else np.zeros(flat.size, bool)
    names = list(method_scores)
    ncols = min(MAX_SCATTER_COLUMNS, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = Figure(figsize=(3.3 * ncols, 3.1 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    x = gt.ravel()[flat]
    for ax, name in zip(axes, names):
        y = np.asarray(method_scores[name], dtype=np.float64).ravel()[flat]
        ax.scatter(
            x[~planted], y[~planted], s=4, alpha=0.35, color=colors[name], lw=0, label="pairs"
        )
        if planted.any():
            ax.scatter(
                x[planted],
                y[planted],
                s=7,
                alpha=0.8,
                color="black",
                lw=0,
                label="planted pool sample",
            )
        row = rows_by_name.get(name, {})
        rho = {
            c: format_value(c, row.get(c, math.nan))
            for c in ("per_anchor_spearman", "pairwise_spearman")
        }
        ax.set_title(
            f"{name}\nper-anchor ρ {rho['per_anchor_spearman']}, "
            f"pairwise ρ {rho['pairwise_spearman']}",
            fontsize=9,
        )
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    if planted.any():
        axes[0].legend(fontsize=7, loc="upper left", markerscale=2)
    fig.supxlabel("ground-truth influence (gradient cosine)", fontsize=9)
    fig.supylabel("method's score", fontsize=9)
    shown = f"{flat.size} of {gt.size}" if flat.size < gt.size else f"all {gt.size}"
    fig.suptitle(f"Scores of (pool, query) pairs: {shown} pairs", fontsize=10)
    save_png(fig, path)


def _bars(
    ax, names: Sequence[str], values: Sequence[float], colors: Mapping[str, Any], title: str, fmt
) -> None:
    """Horizontal bars, log scale when the positive values span a wide range; zero and
    missing values are written, not drawn."""
    values = np.asarray(values, dtype=np.float64)
    shown = np.where(np.isfinite(values) & (values > 0), values, np.nan)
    positive = shown[np.isfinite(shown)]
    log = positive.size > 1 and positive.max() / positive.min() > LOG_SCALE_RANGE
    y = np.arange(len(names))
    ax.barh(y, np.nan_to_num(shown), color=[colors[n] for n in names])
    if log:
        ax.set_xscale("log")
    if positive.size:
        low = positive.min() / 3 if log else 0
        ax.set_xlim(low, positive.max() * (6 if log else 1.35))
    for yi, value in zip(y, values):
        at = value if np.isfinite(value) and value > 0 else ax.get_xlim()[0]
        ax.text(at, yi, "  " + fmt(value), va="center", fontsize=8)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_title(title + (" (log scale)" if log else ""), fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)


def cost_figure(
    path: Path, rows: Sequence[Mapping[str, Any]], n_query: int, colors: Mapping[str, Any]
) -> None:
    """Bars of each row's attribution time, preparation time and bytes per pool sample."""
    from matplotlib.figure import Figure

    names = [r["method"] for r in rows]
    fig = Figure(figsize=(12, 0.45 * len(names) + 1.6), layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    panels = [
        ("seconds", f"attribution time, all {n_query} queries", format_seconds),
        ("prepare_seconds", "preparation time (pool side, once)", format_seconds),
        ("bytes_per_sample", "storage per pool sample", format_bytes),
    ]
    for ax, (column, title, fmt) in zip(axes, panels):
        _bars(ax, names, [r.get(column, math.nan) for r in rows], colors, title, fmt)
    fig.suptitle("What each method costs", fontsize=10)
    save_png(fig, path)


def group_figure(
    path: Path, rows: Sequence[Mapping[str, Any]], names: Sequence[str], colors: Mapping[str, Any]
) -> None:
    """Bars of the ``group_spearman`` (from -1 to 1) and ``group_top1`` (0 to 1) of the rows
    of ``names``, the value written beside each bar."""
    from matplotlib.figure import Figure

    by_name = {r["method"]: r for r in rows}
    fig = Figure(figsize=(9, 0.4 * len(names) + 1.4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    panels = [
        ("group_spearman", "Spearman of the groups' ranking, mean over queries", -1.0),
        ("group_top1", "top group agrees with the gradient's (share of queries)", 0.0),
    ]
    y = np.arange(len(names))
    for ax, (column, title, low) in zip(axes, panels):
        values = np.array([float(by_name[n][column]) for n in names])
        ax.barh(y, np.nan_to_num(values), color=[colors[n] for n in names])
        for yi, value in zip(y, values):
            ax.text(
                max(value, low) if np.isfinite(value) else 0.0,
                yi,
                "  " + format_value(column, value),
                va="center",
                fontsize=8,
            )
        ax.set_xlim(low, 1.25)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(y, names, fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    axes[0].invert_yaxis()
    fig.suptitle("Which data source taught it: group rankings against the gradient's", fontsize=10)
    save_png(fig, path)
