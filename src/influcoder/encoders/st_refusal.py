"""The sentence-transformers module a multi-view encoder directory's ``modules.json`` names, so
that ``SentenceTransformer(path)`` refuses it in one line naming influcoder instead of failing
on a missing ``config.json`` or silently loading the backbone without the head
(:mod:`influcoder.encoders.st_layout`). sentence-transformers imports it only with
``trust_remote_code=True`` (it is not one of its own modules); without, its own message names
this class, and so influcoder.
"""

from __future__ import annotations

from influcoder.errors import InflucoderError


class MultiViewEncoder:
    """Never built: :meth:`load` refuses."""

    @classmethod
    def load(cls, model_name_or_path: str, *args, **kwargs):
        raise InflucoderError(
            f"{model_name_or_path} is an influcoder multi-view encoder (its head reads a sample's "
            f"prompt and response apart; sentence-transformers encodes one text): load it with "
            f"influcoder, e.g. `influcoder encode DATA --encoder {model_name_or_path} --out STORE`"
        )
