"""Distil from ground-truth stores: the glue between ``collect`` and :func:`distill`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from influcoder.distillation.advice import head_advice
from influcoder.distillation.export import embed
from influcoder.distillation.fidelity import card_section, holdout_split, measure
from influcoder.distillation.settings import DistillArguments
from influcoder.distillation.trainer import (
    CARD_NAME,
    DistillResult,
    distill,
    save_encoder,
)
from influcoder.encoders.settings import DEFAULT_ENCODER
from influcoder.errors import InflucoderError, StoreError
from influcoder.groundtruth.influence import cosine_scores
from influcoder.io.atomic import atomic_write_bytes, atomic_write_json
from influcoder.io.samples import encoder_text
from influcoder.io.stores import Store


def ground_truth_card(pool: Store, queries: Store) -> dict:
    """What an encoder was distilled from: enough to tell whether two encoders learnt the same
    ground truth."""
    return {
        "setup": pool.setup,
        "pool": {
            "path": str(pool.path),
            "n": pool.n,
            "samples_sha256": pool.manifest["samples_sha256"],
        },
        "queries": {
            "path": str(queries.path),
            "n": queries.n,
            "samples_sha256": queries.manifest["samples_sha256"],
        },
    }


def distill_stores(
    pool: Store,
    queries: Store,
    out: str | os.PathLike,
    args: DistillArguments | None = None,
    *,
    encoder: str = DEFAULT_ENCODER,
    progress: bool = True,
    device: str = "auto",
) -> DistillResult:
    """Train ``encoder`` on the cosines of two gradient stores; save it to ``out``.

    First a seeded share of the pool samples and of the queries is held out
    (``args.holdout_fraction``, :func:`~influcoder.distillation.fidelity.holdout_split`): nothing
    below sees their gradients. Unless ``args.head == "none"`` the trained encoder (or, with
    ``epochs=0``, the encoder as given) then gets a head (linear or kernel) fitted on every
    sample not held out (:func:`~influcoder.distillation.head_fit.fit_head`), and the card
    records it under ``"head"``. Last, the saved encoder is scored on the held-out block
    (:func:`~influcoder.distillation.fidelity.measure`): ``result.fidelity``, the card's
    ``"fidelity"`` and a section of its ``README.md``.
    ``device`` (``auto``: a GPU when there is one, :mod:`influcoder.io.devices`) is where the
    encoder trains, in float32; it is not one of the settings a checkpoint is resumed with.
    """
    from influcoder.distillation.settings import VIEW_CHOICES
    from influcoder.encoders.directory import load_encoder, view_texts
    from influcoder.io.devices import resolve_device

    args = args or DistillArguments()
    for s in (pool, queries):
        if s.kind != "gradients":
            raise StoreError(
                f"{s.path}: distillation needs gradient stores (ground truth), "
                f"this one holds {s.kind}"
            )
    gt = cosine_scores(pool, queries)  # also refuses stores of different setups
    try:
        holdout = holdout_split(pool.n, queries.n, args.holdout_fraction, args.seed)
    except ValueError as e:
        raise InflucoderError(f"{pool.path}, {queries.path}: {e}") from None
    # Distillation (training, validation, the head) sees only the samples not held out.
    keep_pool, keep_query = (
        (np.arange(pool.n), np.arange(queries.n))
        if holdout is None
        else (holdout.train_pool, holdout.train_query)
    )
    pool_samples = [pool.samples[i] for i in keep_pool]
    query_samples = [queries.samples[j] for j in keep_query]
    model = load_encoder(encoder, device=str(resolve_device(device)))
    pool_texts = [encoder_text(s) for s in pool_samples]
    query_texts = [encoder_text(s) for s in query_samples]
    pool_items, query_items = pool_texts, query_texts
    if args.views == "text+response":  # trained through both views: (text, response) pairs
        two = VIEW_CHOICES["text+response"][0]
        pool_items, query_items = (
            list(zip(*view_texts(s, two))) for s in (pool_samples, query_samples)
        )
    card = {"ground_truth": ground_truth_card(pool, queries), "base_encoder": encoder}
    try:
        # Joint training, the head and the held-out estimate need the vectors themselves:
        # read them once.
        needed = args.regression_weight > 0 or args.head != "none" or holdout is not None
        all_queries = queries.vectors() if needed else None
        vectors = (
            {
                "pool_vectors": pool.vectors()[keep_pool],
                "query_vectors": all_queries[keep_query],
            }
            if needed
            else {}
        )
        result = distill(
            model,
            pool_items,
            query_items,
            gt[np.ix_(keep_pool, keep_query)],
            args,
            out_dir=out,
            progress=progress,
            extra_card=card,
            **({} if args.regression_weight == 0 else vectors),
        )
        # the final encoder's text embeddings, before a head is appended to it in place
        text = (
            (embed(model, pool_texts), embed(model, query_texts))
            if args.head != "none" or holdout is not None
            else None
        )
        advice = None
        if holdout is not None:  # half vs all the ground truth, for the head: seconds
            advice = head_advice(
                model,
                text,
                (vectors["pool_vectors"], vectors["query_vectors"]),
                (
                    [pool.samples[i] for i in holdout.held_pool],
                    [queries.samples[j] for j in holdout.held_query],
                ),
                gt[np.ix_(holdout.held_pool, holdout.held_query)],
                args,
            )
        if args.head != "none":
            result.head = _add_head(model, out, pool_samples, query_samples, text, args, **vectors)
    except ValueError as e:  # too few samples to split, bad settings: the user's to fix
        raise InflucoderError(str(e)) from None
    sizes = (len(keep_pool), pool.n, len(keep_query), queries.n)
    _record_provenance(Path(out), pool, sizes, encoder, result)
    if holdout is not None:
        result.fidelity = measure(
            out,
            encoder,
            holdout,
            pool.samples,
            queries.samples,
            gt,
            seed=args.seed,
            device=str(resolve_device(device)),
            query_vectors=all_queries,
        )
        if advice is not None:
            result.fidelity["more_ground_truth"] = advice
        _record_fidelity(Path(out), result.fidelity)
    return result


def _record_provenance(out: Path, pool: Store, sizes: tuple, encoder: str, result) -> None:
    """Add to the model card (``README.md``) what the encoder was distilled from: the decoder,
    its adapter and gradient recipe, the data sizes, the head, the validation figures (what
    the stores' setup records of them); ``sizes``: pool samples and queries distilled on, and
    in the stores."""
    setup = pool.setup
    adapter, gradient = setup.get("adapter", {}), setup.get("gradient", {})
    lines = ["", "## Distilled from", ""]
    name = pool.manifest.get("provenance", {}).get("model_name")
    if name or adapter:
        decoder = f"- Decoder: `{name or '?'}`"
        if adapter:
            layers = adapter.get("layers")
            decoder += (
                f", LoRA rank {adapter.get('rank')} on {', '.join(adapter.get('targets', []))}"
                + (f" of blocks {layers}" if layers else "")
                + f" ({adapter.get('origin')} adapter)"
            )
        lines.append(decoder + ".")
    if gradient:
        recipe = gradient.get("precondition", {}).get("kind", "none")
        sketch = setup.get("sketch", {}).get("dim")
        lines.append(
            f"- Ground truth: per-sample gradients ({gradient.get('loss', '?')}), "
            f"preconditioning: {recipe}"
            + (f", CountSketch to {sketch}" if sketch else "")
            + "; influence = cosine."
        )
    lines.append(
        f"- Data: {sizes[0]} pool samples x {sizes[2]} queries (of {sizes[1]} x {sizes[3]} in "
        f"the stores); base encoder `{encoder}`."
    )
    head = result.head or {}
    lines.append(
        f"- Head: {head.get('kind', 'none')}"
        + (f", {head['similarity']} similarity" if "similarity" in head else "")
        + "."
    )
    best = ", ".join(
        f"{k.replace('_', ' ')} {v:+.3f}" for k, v in sorted((result.best or {}).items())
    )
    if best:
        lines.append(f"- Validation (pool samples and queries held out of training): {best}.")
    _append_to_model_card(out, "\n".join(lines) + "\n")


def _record_fidelity(out: Path, fidelity: dict) -> None:
    """Add the held-out estimate to the encoder's card and model card (``README.md``)."""
    card_path = out / CARD_NAME
    card = json.loads(card_path.read_text(encoding="utf-8"))
    atomic_write_json(card_path, {**card, "fidelity": fidelity})
    _append_to_model_card(out, card_section(fidelity))


def _append_to_model_card(out: Path, section: str) -> None:
    """Append ``section`` (markdown) to the encoder's ``README.md``, atomically."""
    readme = out / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    atomic_write_bytes(readme, (text + section).encode("utf-8"))


def _add_head(
    model,
    out,
    pool_samples: list,
    query_samples: list,
    text: tuple[np.ndarray, np.ndarray],
    args: DistillArguments,
    *,
    pool_vectors,
    query_vectors,
) -> dict:
    """Fit the head on ``model``'s embeddings of every sample (``text``: those of the text
    view, pool and queries), for each set of views
    ``args.views`` allows and each kind ``args.head`` allows
    (:func:`~influcoder.distillation.head_fit.fit_views`); save the encoder again, with a linear head
    on one view appended as ``Dense``, any other as a multi-view directory
    (:mod:`influcoder.encoders.views`). Returns the head's card entry."""
    from influcoder.distillation.export import append_head
    from influcoder.distillation.head_fit import DEFAULT_FOLDS, fit_views
    from influcoder.distillation.linear import LinearHead
    from influcoder.distillation.settings import HEAD_CHOICES, VIEW_CHOICES
    from influcoder.encoders.basis import save_basis
    from influcoder.encoders.directory import save_multi_view, view_texts
    from influcoder.io.atomic import atomic_write_dir
    from influcoder.similarity import unit_rows

    n_pool, n_query = len(pool_samples), len(query_samples)
    folds = min(DEFAULT_FOLDS, n_pool // 2, n_query // 2)
    if folds < 2:
        raise ValueError(
            f"the head's cross-validation needs at least 4 pool samples and 4 "
            f"queries, got {n_pool} and {n_query}; use head='none' (--head none)"
        )
    embedded = {"text": text}
    kinds = HEAD_CHOICES[args.head]
    # A linear head on one view is appended as Dense; a kernel head runs in a multi-view
    # directory, which scales each view to unit length. When a kernel may be chosen and the
    # encoder's outputs are not unit vectors already (MiniLM's and every distilled encoder's
    # are), the one-view heads are fitted on unit vectors and a linear head kept reads them
    # through a Normalize before its Dense.
    raw_text = kinds == ("linear",) or all(
        np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-4) for e in embedded["text"]
    )

    def features(views: tuple[str, ...]) -> tuple:
        if views == ("text",) and raw_text:  # what the appended Dense will read
            return embedded["text"]
        for v in views:
            if v not in embedded:
                embedded[v] = tuple(
                    embed(model, view_texts(samples, (v,))[0])
                    for samples in (pool_samples, query_samples)
                )
        return tuple(np.hstack([unit_rows(embedded[v][side]) for v in views]) for side in (0, 1))

    views, head, figures = fit_views(
        {views: features(views) for views in VIEW_CHOICES[args.views]},
        pool_vectors,
        query_vectors,
        components=args.head_components,
        landmarks=args.head_landmarks,
        folds=folds,
        seed=args.seed,
        similarity=args.head_similarity,
        kinds=kinds,
    )
    card_path = Path(out) / CARD_NAME
    card = json.loads(card_path.read_text(encoding="utf-8"))
    entry = {**head.card(), "views": list(views), "views_validation_per_anchor_spearman": figures}
    card = {**card, "head": entry}
    setup = card.get("ground_truth", {}).get("setup", {})

    def basis(tmp: Path) -> None:  # what query gradients are projected on, beside the head
        save_basis(tmp, head.directions, setup)

    if views == ("text",) and isinstance(head, LinearHead):
        save_encoder(append_head(model, head, unit_input=not raw_text), out, card, basis)
    else:

        def fill(tmp: Path) -> None:
            save_multi_view(
                tmp, model, views, head.saved(), head.similarity, card.get("base_encoder")
            )
            basis(tmp)
            (tmp / CARD_NAME).write_text(
                json.dumps(card, indent=2, sort_keys=True) + "\n", encoding="utf-8"
            )

        atomic_write_dir(Path(out), fill)
    return entry
