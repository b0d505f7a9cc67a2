"""What goes on the HTML report's page, computed from an evaluation's input for the template:
the results table (formatted cells, each metric's best marked), each shown query's top
samples side by side (hits and planted samples marked), and the "Which data source taught it"
section of group fidelity. :mod:`influcoder.evaluation.report` checks the input and renders.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import rankdata

from influcoder.evaluation.evaluate import COST_COLUMNS, GROUP_COLUMNS
from influcoder.io.samples import Sample
from influcoder.io.tables import clip_text, column_names, format_value

if TYPE_CHECKING:
    from influcoder.evaluation.group_fidelity import GroupFidelity

#: Groups listed in the report's overview of groups (the ground truth's most often first).
GROUPS_SHOWN = 12
#: Groups listed per shown query (the ground truth's best).
GROUPS_PER_QUERY = 6
#: The heading of the ground truth's column in the side-by-side tables.
GROUND_TRUTH = "ground truth"
#: Characters of a sample's text in a side-by-side cell's tooltip.
TITLE_TEXT_CHARS = 1000


def results_table(rows: Sequence[Mapping[str, Any]], references: set[str]) -> dict[str, Any]:
    """The results table: formatted cells, each metric's best value (over the methods that
    are not the ground truth; costs are not ranked) marked."""
    columns = column_names(rows)
    judged = [r for r in rows if r["method"] not in references]
    best: dict[str, float] = {}
    for col in columns[1:]:
        values = [float(r[col]) for r in judged if col in r and math.isfinite(float(r[col]))]
        if values and col not in COST_COLUMNS:
            best[col] = max(values)
    table = []
    for r in rows:
        reference = r["method"] in references
        cells = [
            {
                "text": format_value(col, r.get(col, math.nan)),
                "best": (not reference and col in best and col in r and float(r[col]) == best[col]),
            }
            for col in columns[1:]
        ]
        label = format_value("method", r["method"])
        table.append(
            {
                "reference": reference,
                "cells": cells,
                "label": f"{label} (ground truth)" if reference else label,
            }
        )
    return {"columns": columns, "rows": table}


def _display_text(sample: Sample) -> str:
    """A sample on one line for people: prompt, an arrow, response."""
    return f"{sample.prompt} → {sample.response}"


def side_by_side(
    gt: np.ndarray,
    method_scores: Mapping[str, np.ndarray],
    pool: Sequence[Sample],
    queries: Sequence[Sample],
    query_indices: Sequence[int],
    labels: np.ndarray | None,
    top_n: int,
    chars: int,
) -> dict[str, Any]:
    """For each shown query, the ``top_n`` pool samples of the ground truth and of each
    method; a method's cell is a hit when the ground truth also has it in its top."""
    columns = {GROUND_TRUTH: gt, **method_scores}
    shown = []
    for j in query_indices:
        tops = {
            name: np.argsort(-np.asarray(s[:, j], dtype=np.float64), kind="stable")[:top_n]
            for name, s in columns.items()
        }
        gt_top = set(tops[GROUND_TRUTH].tolist())
        table = []
        for rank in range(min(top_n, len(pool))):
            cells = []
            for name, s in columns.items():
                i = int(tops[name][rank])
                text = _display_text(pool[i])
                cells.append(
                    {
                        "score": float(s[i, j]),
                        "id": pool[i].id,
                        "hit": name != GROUND_TRUTH and i in gt_top,
                        "planted": labels is not None and bool(labels[i]),
                        "title": clip_text(text, TITLE_TEXT_CHARS),
                        "text": clip_text(text, chars),
                    }
                )
            table.append(cells)
        shown.append(
            {
                "number": j + 1,
                "id": queries[j].id,
                "rows": table,
                "text": clip_text(_display_text(queries[j]), 4 * chars),
            }
        )
    return {"top_n": top_n, "columns": list(columns), "queries": shown}


def _top_shares(group_scores: np.ndarray) -> np.ndarray:
    """Per group, the share of queries (rows) whose top group it is; a tie of ``t`` groups at
    the top gives each ``1 / t``."""
    top = group_scores == group_scores.max(axis=1, keepdims=True)
    return (top / top.sum(axis=1, keepdims=True)).mean(axis=0)


def group_section(
    result: GroupFidelity,
    gt: np.ndarray,
    references: set[str],
    queries: Sequence[Sample] | None,
    query_indices: Sequence[int],
    rows: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """What the "Which data source taught it" section shows: the fidelity figures, an
    overview of the groups, and the shown queries' groups ranked by the ground truth."""
    from influcoder.evaluation.group_fidelity import group_scores

    names, sizes = result.groups.names, result.groups.sizes
    gt_groups = group_scores(
        gt, result.groups, aggregate=result.aggregate, temperature=result.temperature
    )
    judged = {name: g for name, g in result.scores.items() if name not in references}
    columns = {GROUND_TRUTH: gt_groups, **judged}
    # Rank 1 = the highest group score of a query; tied groups share the best rank.
    ranks = {name: rankdata(-g, axis=1, method="min") for name, g in columns.items()}
    shares = {name: _top_shares(g) for name, g in columns.items()}
    order = np.lexsort((ranks[GROUND_TRUTH].mean(axis=0), -shares[GROUND_TRUTH]))
    overview = [
        {
            "group": names[g],
            "n": int(sizes[g]),
            "cells": [
                {"share": float(shares[name][g]), "rank": float(ranks[name][:, g].mean())}
                for name in columns
            ],
        }
        for g in order[:GROUPS_SHOWN]
    ]
    shown = []
    for j in query_indices:
        top = np.argsort(-gt_groups[j], kind="stable")[:GROUPS_PER_QUERY]
        shown.append(
            {
                "number": j + 1,
                "id": queries[j].id if queries is not None else str(j + 1),
                "rows": [
                    {
                        "group": names[g],
                        "n": int(sizes[g]),
                        "score": float(gt_groups[j, g]),
                        "rank": int(ranks[GROUND_TRUTH][j, g]),
                        "ranks": [int(ranks[name][j, g]) for name in judged],
                    }
                    for g in top
                ],
            }
        )
    fidelity = [r for r in rows if r["method"] in judged]
    best = {c: max((float(r[c]) for r in fidelity), default=math.nan) for c in GROUP_COLUMNS}
    return {
        "field": result.groups.field,
        "aggregate": result.aggregate,
        "temperature": result.temperature,
        "n_groups": len(names),
        "n_query": gt_groups.shape[0],
        "columns": list(columns),
        "methods": list(judged),
        "fidelity": [
            {
                "method": r["method"],
                "cells": [
                    {"text": format_value(c, r[c]), "best": float(r[c]) == best[c]} for c in best
                ],
                "undefined": result.figures[r["method"]]["undefined"],
            }
            for r in fidelity
        ],
        "overview": overview,
        "more": max(0, len(names) - GROUPS_SHOWN),
        "queries": shown,
        "per_query": min(GROUPS_PER_QUERY, len(names)),
    }
