"""Tokenising for the ground truth: each sample rendered with the chat template (or plain
text), its prompt tokens masked out of the labels (the response-only loss), over-long samples
cut by a truncation policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from influcoder.errors import InputError
from influcoder.groundtruth.settings import TEMPLATES, TRUNCATION_POLICIES
from influcoder.io.samples import Sample

#: ``prompt-left``: drop prompt tokens from the start (oldest context first), then, if the
#: response alone is still too long, drop response tokens from its end.
#: ``right``: keep the first ``max_length`` tokens (the response loses its end; a sample whose
#: prompt fills the window has no response left, which is an error).
#: ``error``: an over-long sample is an error.


#: The label of tokens that carry no loss (the prompt), as in Hugging Face.
IGNORE_INDEX = -100


@dataclass(frozen=True)
class TokenizedSample:
    """One tokenized prompt + response: the unit every gradient is taken of.

    Args:
        input_ids: Token ids of the whole conversation (prompt then response).
        labels: Same length; ``-100`` on prompt tokens, equal to ``input_ids`` on response tokens.
            Labels are *not* shifted: as in Hugging Face, the loss at position ``t`` compares the
            logits at ``t - 1`` with ``labels[t]``, so ``labels[0]`` never counts.

    Lists (or any sequence of ints) are accepted and stored as tuples, so samples are hashable.

    Example::

        >>> s = TokenizedSample(input_ids=[5, 6, 7, 8], labels=[-100, -100, 7, 8])
        >>> s.n_response
        2
    """

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "input_ids", tuple(int(i) for i in self.input_ids))
        object.__setattr__(self, "labels", tuple(int(i) for i in self.labels))
        if not self.input_ids:
            raise ValueError("a sample needs at least one token")
        if len(self.labels) != len(self.input_ids):
            raise ValueError(
                f"labels ({len(self.labels)}) and input_ids ({len(self.input_ids)}) "
                "must have the same length"
            )

    @property
    def n_response(self) -> int:
        """Number of tokens that carry loss: labels other than -100 in ``labels[1:]``."""
        return sum(label != IGNORE_INDEX for label in self.labels[1:])


def resolve_template(tokenizer, template: str) -> str:
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if template == "auto":
        return "chat" if has_chat else "plain"
    if template == "chat" and not has_chat:
        raise InputError("the tokenizer has no chat template; use --template plain")
    return template


def render(tokenizer, sample: Sample, template: str) -> tuple[str, str]:
    """The prompt text (with the generation prompt) and the response text (with the
    end-of-turn marker), such that their concatenation is the whole rendered conversation."""
    if template == "plain":
        return sample.prompt + "\n", sample.response + (tokenizer.eos_token or "")
    turns = (
        list(sample.messages) if sample.messages else [{"role": "user", "content": sample.prompt}]
    )
    prefix = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(
        turns + [{"role": "assistant", "content": sample.response}], tokenize=False
    )
    if not full.startswith(prefix):
        raise InputError(
            "the chat template renders the conversation so that the prompt is not a "
            "prefix of it; use --template plain",
            field="template",
        )
    return prefix, full[len(prefix) :]


def tokenize_sample(
    tokenizer,
    sample: Sample,
    *,
    max_length: int,
    truncation: str = "prompt-left",
    template: str = "chat",
) -> TokenizedSample:
    """Tokenize a sample with a response-only loss mask (see module docstring)."""
    if truncation not in TRUNCATION_POLICIES:
        raise ValueError(f"truncation must be one of {TRUNCATION_POLICIES}, got {truncation!r}")
    prefix, response = render(tokenizer, sample, template)
    p = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"]
    if len(p) + len(r) > max_length:
        if truncation == "error":
            raise InputError(
                f"{len(p) + len(r)} tokens, more than max_length={max_length} "
                f"(truncation policy 'error')",
                field=f"sample '{sample.id}'",
            )
        if truncation == "prompt-left":
            keep_prompt = max(1, max_length - len(r)) if p else 0
            p = p[len(p) - keep_prompt :] if keep_prompt else []
            r = r[: max_length - len(p)]
        else:  # right
            p, r = p[:max_length], r[: max(0, max_length - len(p))]
    ids = tuple(p + r)
    labels = tuple([IGNORE_INDEX] * len(p) + r)
    out = TokenizedSample(ids, labels)
    if out.n_response == 0:
        raise InputError(
            f"no response tokens left to take a loss on (prompt {len(p)} tokens, "
            f"response {len(r)} tokens, max_length {max_length}, truncation "
            f"'{truncation}')",
            field=f"sample '{sample.id}'",
        )
    return out


def tokenize_samples(
    tokenizer,
    samples: Sequence[Sample],
    *,
    max_length: int,
    truncation: str = "prompt-left",
    template: str = "auto",
    path: str | None = None,
) -> list[TokenizedSample]:
    """Tokenize all samples up front, so that a bad one stops the run before anything is
    written."""
    template = resolve_template(tokenizer, template)
    out = []
    for s in samples:
        try:
            out.append(
                tokenize_sample(
                    tokenizer, s, max_length=max_length, truncation=truncation, template=template
                )
            )
        except InputError as e:
            if path is None or e.path is not None:
                raise
            raise InputError(e.reason, path=path, field=e.field) from None
    return out
