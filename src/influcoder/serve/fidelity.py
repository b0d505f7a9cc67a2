"""The encoder's held-out fidelity estimate as ``/info`` answers it: read once from the card of
the encoder the server runs (``distill --holdout-fraction``), reduced to the figures the page
shows. An encoder without one (a bundled or hub encoder, ``--holdout-fraction 0``, an older
card) answers ``null``; a card that cannot be read is logged and answers ``null`` too, since
the estimate is information about the encoder, not something serving depends on."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from influcoder.encoders.settings import CARD_NAME

logger = logging.getLogger(__name__)

#: card figure -> the name ``/info`` gives it (a JSON field name without ``@``)
FIGURES = {
    "per_anchor_spearman": "per_anchor_spearman",
    "aggregated_spearman": "aggregated_spearman",
    "recall@10": "recall_at_10",
}


def encoder_fidelity(encoder: str) -> dict | None:
    """``/info``'s ``fidelity``: sizes, the share held out, each figure of :data:`FIGURES`
    with its interval, the untrained encoder's per-anchor figure and the "more ground truth"
    sentence; ``None`` when ``encoder`` (a directory, or a name) has no estimate."""
    card = Path(encoder) / CARD_NAME
    if not card.is_file():
        return None
    try:
        fid = json.loads(card.read_text(encoding="utf-8")).get("fidelity")
        if not isinstance(fid, dict):
            return None
        untrained = fid.get("untrained", {}).get("per_anchor_spearman", {}).get("value")
        advice = fid.get("more_ground_truth")
        return {
            "n_pool": int(fid["n_pool"]),
            "n_queries": int(fid["n_queries"]),
            "holdout_fraction": float(fid["holdout_fraction"]),
            "level": float(fid["interval"]["level"]),
            **{
                name: {k: float(fid["encoder"][key][k]) for k in ("value", "low", "high")}
                for key, name in FIGURES.items()
            },
            "untrained_per_anchor_spearman": None if untrained is None else float(untrained),
            "more_ground_truth": advice.get("sentence") if isinstance(advice, dict) else None,
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        logger.warning(
            "%s: no held-out fidelity shown, the card's entry is malformed (%s)", card, e
        )
        return None
