"""A decoder kept loaded to take the gradients of new samples exactly as a store's were taken:
the vectors ``collect --like STORE`` would write, without a store, a temporary folder or a
decoder load per call. The server's and the Python API's query gradients use it: loading the
decoder costs seconds, a query's forward and backward pass a fraction of one.

The samples are cut into shards of the store's ``shard_rows`` and each shard into the same
token-budgeted batches as ``collect`` cuts them, and the rows are rounded to the store's
dtype, so the vectors are the bytes a store collected ``--like`` it holds.

The same decoder also gives each sample's *representation* (forward only): its last hidden
states averaged over the response tokens, DATE-LM's Rep-Sim features (the ``repsim``
baseline of :mod:`influcoder.evaluation.repsim`).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from influcoder.groundtruth.collect import CollectJob, token_budget
from influcoder.groundtruth.tokenize import IGNORE_INDEX, tokenize_samples
from influcoder.io.devices import DEFAULT_DEVICE
from influcoder.io.samples import Sample
from influcoder.io.stores import DTYPES, Store, open_store

#: How :meth:`ResidentCollector.representations` pools a sample's last hidden states.
REPRESENTATION_POOLINGS = ("response", "all", "last")


class ResidentCollector:
    """Gradients of new samples, taken like the gradient store ``like`` (its path or
    :class:`Store`): the same decoder (``model`` says where it is now, if it moved; its
    fingerprint is checked), adapter, LoRA modules, sketch, template and dtype.

    The decoder loads on the first call (or :meth:`load`) and stays; calls are serialised, as
    one decoder takes one backward pass at a time.
    """

    def __init__(
        self,
        like: Store | str | os.PathLike,
        *,
        model: str | None = None,
        device: str = DEFAULT_DEVICE,
    ):
        self.like = like if isinstance(like, Store) else open_store(like)
        self.model, self.device = model, device
        self._lock = threading.Lock()
        self._job = self._compute = None

    @property
    def dim(self) -> int:
        return self.like.dim

    def load(self) -> ResidentCollector:
        """Load the decoder and the store's adapter, checking them as ``collect --like``
        does (a different model or adapter is refused by name)."""
        with self._lock:
            if self._compute is None:
                overrides = {"model": self.model} if self.model else {}
                args = CollectJob.settings_of(self.like, **overrides)
                job = CollectJob(args, self.like, progress=False, device=self.device)
                with tempfile.TemporaryDirectory(prefix="influcoder-resident-") as tmp:
                    plan = job.plan([], "<none>", Path(tmp) / "store")  # writes nothing
                self._job, self._compute = job, plan.local()
        return self

    def _tokenize(self, samples: Sequence[Sample], source: str) -> list:
        args = self._job.args
        return tokenize_samples(
            self._job.tokenizer,
            list(samples),
            max_length=args.max_length,
            truncation=args.truncation,
            template=self._job.template,
            path=source,
        )

    def representations(
        self,
        samples: Sequence[Sample],
        source: str = "<samples>",
        pooling: str = "response",
        layers: str = "last",
    ) -> np.ndarray:
        """``[n, hidden]`` float32: the decoder's last hidden states (the store's adapter on,
        no gradient), averaged over each sample's response tokens (``pooling="response"``),
        over all its tokens (``"all"``), or its last token (``"last"``). With
        ``layers="all"``, ``[n, (blocks + 1) * hidden]``: the same of every layer's output
        (the embeddings' first, the last hidden states last), each layer's part scaled to
        unit norm so that every layer counts alike."""
        import torch

        from influcoder.groundtruth.loss import pad_batch

        if pooling not in REPRESENTATION_POOLINGS:
            raise ValueError(f"pooling must be one of {REPRESENTATION_POOLINGS}, got {pooling!r}")
        if layers not in ("last", "all"):
            raise ValueError(f"layers must be 'last' or 'all', got {layers!r}")
        self.load()
        base = self._job.peft_model.get_base_model()
        backbone = getattr(base, base.base_model_prefix)  # no vocabulary-sized logits
        device = next(base.parameters()).device
        with self._lock:
            tokenized = self._tokenize(samples, source)
            rows_out: dict[int, np.ndarray] = {}

            def compute(rows):
                ids, mask, labels = pad_batch(
                    [tokenized[r] for r in rows], self._job.tokenizer.pad_token_id, device
                )
                out = backbone(
                    input_ids=ids, attention_mask=mask, output_hidden_states=layers == "all"
                )
                if pooling == "response":
                    weights = labels != IGNORE_INDEX
                elif pooling == "all":
                    weights = mask.bool()
                else:
                    weights = torch.zeros_like(mask, dtype=torch.bool)
                    weights[torch.arange(len(rows)), mask.sum(1) - 1] = True
                w = weights.unsqueeze(-1).float()
                if layers == "last":
                    return ((out.last_hidden_state.float() * w).sum(1) / w.sum(1)).cpu().numpy()
                parts = [(h.float() * w).sum(1) / w.sum(1) for h in out.hidden_states]
                parts = [p / p.norm(dim=1, keepdim=True) for p in parts]
                return torch.cat(parts, dim=1).cpu().numpy()

            with torch.no_grad():
                lengths = [len(t.input_ids) for t in tokenized]
                for rows, values in token_budget(self._job.args).run(lengths, compute):
                    rows_out.update(zip(rows, values))
        if not tokenized:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([rows_out[r] for r in range(len(tokenized))]).astype(np.float32)

    def vectors(self, samples: Sequence[Sample], source: str = "<queries>") -> np.ndarray:
        """``[n, dim]`` float32: the sketched, normalised gradient of each sample, as the
        store's dtype holds it. A sample the store's settings refuse (no response token left
        after truncation, say) raises before any gradient is taken; ``source`` names it."""
        self.load()
        args = self._job.args
        with self._lock:
            tokenized = self._tokenize(samples, source)
            out = np.empty((len(tokenized), self.dim), dtype=np.float32)
            for start in range(0, len(tokenized), args.shard_rows):
                rows, _ = self._compute(tokenized[start : start + args.shard_rows])
                out[start : start + len(rows)] = rows.astype(DTYPES[args.dtype])
        return out
