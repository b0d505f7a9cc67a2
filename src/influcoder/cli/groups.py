"""``attribute --group-by``: the table of groups per query, by every group aggregate."""

from __future__ import annotations

import click

from influcoder.attribution.settings import LEARNED_AGGREGATE, MISSING_GROUP
from influcoder.cli.options import log
from influcoder.io.tables import clip_text


def sample_text(sample, width: int) -> str:
    text = f"{sample.prompt} -> {sample.response}" if sample.prompt else sample.response
    return clip_text(text, width)


def attribute_groups(
    attributor, samples, aggregate, field, group_aggregate, temperature, out, top_k, width
):
    """``attribute --group-by``: a table of groups per query (or for the aggregate)."""
    from influcoder.attribution.groups import group_attribution, ranking_groups
    from influcoder.io.tables import write_table

    index = attributor.index
    # learned is shown whenever the encoder carries a pooler, and refused without one
    learned = group_aggregate == LEARNED_AGGREGATE
    pooler = attributor.pooler(f"--group-aggregate {LEARNED_AGGREGATE}" if learned else None)
    how = {"temperature": temperature, "pooler": pooler, "aggregate": group_aggregate}
    if aggregate is not None:
        ranking = attributor.aggregate(samples, aggregate)
        result = ranking_groups(index, ranking.scores, field, **how)
        heads = [(f"{aggregate} over {len(samples)} queries", "aggregate")]
    else:
        samples, q = attributor.encode(samples)
        result = group_attribution(index, q, field, **how)
        heads = [
            (f"query {j} ({s.id}): {sample_text(s, width)}", s.id)
            for j, s in enumerate(samples, start=1)
        ]
    groups = result.groups
    missing = (
        f"; {groups.n_missing} pool samples lack '{field}': their group is {MISSING_GROUP}"
        if groups.n_missing
        else ""
    )
    if out is not None:
        rows = [
            {"query_id": qid, "field": field, **row, "temperature": temperature}
            for j, (_, qid) in enumerate(heads)
            for row in result.table(j)
        ]
        write_table(out, rows)
        log(f"wrote {out}: {len(heads)} x {len(groups.names)} groups of '{field}'{missing}")
        return
    learned_text = (
        f"; learned: the encoder's learned pooling of the group ({pooler.path.name})"
        if pooler is not None
        else ""
    )
    click.echo(
        f"influence per group of '{field}' ({len(groups.names)} groups) over every pool "
        f"sample's score, highest {group_aggregate} first; softmax: sum of "
        f"softmax(|s|/{temperature:g}) * s over the group (AirRep){learned_text}{missing}"
    )
    for j, (head, _) in enumerate(heads):
        table = result.table(j)
        click.echo(f"\n{head}")
        click.echo(f"  {'n':>6}  " + "  ".join(f"{name:>8}" for name in result.names) + "  group")
        for row in table[:top_k]:
            click.echo(
                f"  {row['n']:>6}  "
                + "  ".join(f"{row[name]:+8.4f}" for name in result.names)
                + f"  {row['group']}"
            )
        if len(table) > top_k:
            click.echo(f"  ... {len(table) - top_k} more groups (--top-k, or --out for all)")
