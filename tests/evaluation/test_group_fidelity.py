"""Group fidelity (``evaluate --group-by``) against a row-by-row reference; ties and constant
queries; the field checks."""

from __future__ import annotations

import numpy as np
import pytest

from influcoder.attribution.settings import GROUP_STATS
from influcoder.errors import InputError
from influcoder.evaluation.evaluate import COST_COLUMNS, GROUP_COLUMNS, metric_rows
from influcoder.evaluation.group_fidelity import (
    add_group_columns,
    evaluation_groups,
    judge_groups,
    top1_agreement,
)
from influcoder.io.samples import Sample

from ..references import reference_group_fidelity

#: Five groups; the two largest have the same size, so a constant column ties them on "sum".
SIZES = {"web": 6, "books": 6, "code": 4, "chat": 3, "math": 1}


def _pool(labels):
    return [
        Sample(id=f"p{i}", prompt="p", response="r", meta={"source": g})
        for i, g in enumerate(labels)
    ]


@pytest.fixture()
def case():
    rng = np.random.default_rng(3)
    labels = [g for g, n in SIZES.items() for _ in range(n)]
    labels = [labels[i] for i in rng.permutation(len(labels))]
    n_pool, n_query = len(labels), 9
    gt = rng.normal(size=(n_pool, n_query)) * 0.3
    methods = {
        "gradient": gt.copy(),
        "close": gt + 0.1 * rng.normal(size=gt.shape),
        "noise": rng.normal(size=gt.shape) * 0.3,
    }
    # A query the method scores constantly: every group's mean, max and softmax are equal (no
    # ranking: the Spearman is undefined), and "sum" ties the two largest groups at the top.
    methods["noise"][:, 4] = 0.5
    return labels, gt, methods


@pytest.mark.parametrize("aggregate", GROUP_STATS)
@pytest.mark.parametrize("temperature", [0.1, 1.0])
def test_fidelity_equals_the_row_by_row_reference(case, aggregate, temperature):
    labels, gt, methods = case
    groups = evaluation_groups(_pool(labels), "source")
    assert groups.names == list(dict.fromkeys(labels))
    # A ground truth constant on query 7: its groups tie (all of them, but on "sum").
    gt_tied = gt.copy()
    gt_tied[:, 7] = 0.25
    for truth in (gt, gt_tied):
        result = judge_groups(methods, truth, groups, aggregate=aggregate, temperature=temperature)
        assert list(result.figures) == list(methods)
        for name, scores in methods.items():
            expected = reference_group_fidelity(
                truth, scores, labels, aggregate=aggregate, temperature=temperature
            )
            got = result.figures[name]
            assert got["group_spearman"] == pytest.approx(expected["group_spearman"], abs=1e-12)
            assert got["group_top1"] == pytest.approx(expected["group_top1"], abs=1e-12)
            assert got["undefined"] == expected["undefined"]
            assert result.scores[name].shape == (gt.shape[1], len(SIZES))
    result = judge_groups(methods, gt, groups, aggregate=aggregate, temperature=temperature)
    assert result.figures["gradient"] == {"group_spearman": 1.0, "group_top1": 1.0, "undefined": 0}
    # The constant query: no ranking except on "sum", where it ties the two groups of six.
    assert result.figures["noise"]["undefined"] == (0 if aggregate == "sum" else 1)
    assert result.figures["close"]["group_spearman"] > 0.5
    tied = judge_groups(methods, gt_tied, groups, aggregate=aggregate, temperature=temperature)
    assert tied.figures["gradient"]["undefined"] == (0 if aggregate == "sum" else 1)
    context = result.context()
    assert context["groups"] == {g: SIZES[g] for g in groups.names}
    assert context["aggregate"] == aggregate and context["field"] == "source"


def test_top1_agreement_counts_a_tie_by_its_share():
    gt = np.array([[0.0, 1.0, 0.5], [0.2, 0.2, 0.1], [1.0, 0.0, 0.0]])
    pred = np.array([[1.0, 1.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    # Query 0: the method ties groups 0 and 1, one of which is the gradient's top: 1/2.
    # Query 1: the gradient ties 0 and 1, the method's top is 0: right.  Query 2: wrong.
    assert top1_agreement(gt, pred).tolist() == [0.5, 1.0, 0.0]


def test_group_columns_go_before_the_costs(case):
    labels, gt, methods = case
    rows = metric_rows(gt, {n: (s, {"seconds": 1.0}) for n, s in methods.items()}, k=3)
    result = judge_groups(methods, gt, evaluation_groups(_pool(labels), "source"))
    out = add_group_columns(rows, result)
    columns = list(out[0])
    assert columns[-len(COST_COLUMNS) - len(GROUP_COLUMNS) :] == [*GROUP_COLUMNS, *COST_COLUMNS]
    assert [r["method"] for r in out] == list(methods)
    assert out[1]["group_top1"] == result.figures["close"]["group_top1"]


def test_evaluation_groups_refuses_a_field_some_samples_lack():
    pool = _pool(["web", "code", "web", "chat"])
    pool[2] = Sample(id="doc-17", prompt="p", response="r", meta={"other": 1})
    pool[3] = Sample(id="doc-18", prompt="p", response="r", meta={"source": ""})
    with pytest.raises(InputError) as e:
        evaluation_groups(pool, "source")
    message = str(e.value)
    assert "--group-by 'source'" in message and "'doc-17' (row 2)" in message
    assert "nor do 1 other pool samples of 4" in message


def test_evaluation_groups_refuses_one_group_and_an_unknown_field():
    with pytest.raises(InputError, match=r"every pool sample has the value 'web'.*at least 2"):
        evaluation_groups(_pool(["web"] * 3), "source")
    with pytest.raises(InputError, match=r"no pool sample has the metadata field 'src'.*source"):
        evaluation_groups(_pool(["web", "code"]), "src")


def test_bad_options_are_refused(case):
    labels, gt, methods = case
    groups = evaluation_groups(_pool(labels), "source")
    with pytest.raises(ValueError, match="group aggregate must be one of"):
        judge_groups(methods, gt, groups, aggregate="median")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        judge_groups(methods, gt, groups, temperature=0.0)
