"""Group tables: ``attribute --group-by`` (groups per query, by every group aggregate) and
``lds --group-removal`` (each method's aggregates against group-removal retraining); and
``lds --paired`` (one method's LDS minus another's), the other table ``lds`` adds."""

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


#: ``lds``'s options for group-removal runs and paired differences, top to bottom.
GROUP_REMOVAL_OPTIONS = (
    click.option(
        "--group-removal",
        metavar="FIELD",
        default=None,
        help="also judge each method's group aggregates (mean, sum, max, softmax; learned "
        "for an encoder with a pooler) by the group-removal runs of `validate "
        "--group-removal FIELD`: Spearman over the groups, per query, of the aggregate "
        "against the loss rise each group's removal caused",
    ),
    click.option(
        "--group-min-size",
        type=int,
        default=5,
        show_default=True,
        help="--group-removal: the smallest group removed (as validate was given)",
    ),
    click.option(
        "--paired",
        metavar="A,B",
        multiple=True,
        help="also method A's LDS minus method B's, with a paired bootstrap interval (the "
        "same subsets and queries drawn for both), on the held-out set and per --by value; "
        "repeatable",
    ),
    click.option(
        "--temperature",
        type=float,
        default=None,
        help="--group-removal: temperature of the softmax aggregate [default: attribute's]",
    ),
)


def group_removal_options(f):
    """Apply :data:`GROUP_REMOVAL_OPTIONS` to the command ``f``."""
    for option in reversed(GROUP_REMOVAL_OPTIONS):
        f = option(f)
    return f


def print_group_removal(rows, field: str) -> None:
    """``lds --group-removal``: every method's aggregates, one row each."""
    from influcoder.io.tables import format_table

    table = [
        {"method": row["method"], "aggregate": name, **figures}
        for row in rows
        for name, figures in row.get("group_removal", {}).items()
    ]
    first = table[0] if table else {"groups": 0, "queries": 0}
    click.echo(
        f"\ngroup removal by {field}: Spearman over {first['groups']} removed groups of "
        f"each method's aggregate against the loss rise, mean over {first['queries']} "
        "queries (95% interval over queries)"
    )
    click.echo(format_table(table))


def parse_pairs(values) -> list[tuple[str, str]]:
    """``--paired A,B`` values as ``(A, B)`` pairs."""
    pairs = []
    for value in values:
        a, sep, b = value.partition(",")
        if not sep or not a or not b or "," in b:
            raise click.BadParameter(
                f"{value!r}: give two method names, A,B", param_hint="--paired"
            )
        pairs.append((a, b))
    return pairs


def print_paired(rows) -> None:
    """``lds --paired``: each pair's LDS difference, per set of queries."""
    from influcoder.io.tables import format_table

    found = [
        {"method A - method B": f"{p['a']} - {p['b']}", "queries": p["queries"], "n": p["n"],
         "difference": p["difference"], "95%": f"[{p['low']:+.3f}, {p['high']:+.3f}]"}
        for row in rows
        for p in row.get("paired", [])
    ]  # fmt: skip
    click.echo("\nLDS of A minus LDS of B, paired bootstrap over subsets and queries")
    click.echo(format_table(found))
