"""The gradient collectors that ``bench_peers.py`` compares, each behind one interface.

A method is built once on the loaded model (``Method(model, ctx)``: its set-up, not timed) and
then called on a list of :class:`~influcoder.groundtruth.tokenize.TokenizedSample`; a call
returns ``(cosines, passes)``: the ``[n, n]`` matrix of the pairwise cosines of the samples'
LoRA gradients, and how many per-sample gradient passes it took to get them. ``ctx`` is the
plan's dict (``pad_token_id``, ``sketch_dim``, batch sizes) plus ``scratch``, a folder the
peers may write their files to.

* ``plain``: :func:`common.plain_loop`, one sample at a time, ``.backward()``, dense ``.grad``:
  the reference every other row is compared with.
* ``collect``, ``collect-bf16``, ``collect-dense``: influcoder's fast path
  (:class:`~influcoder.groundtruth.gradients.GradientComputer` through ``collect``'s own
  :func:`~influcoder.groundtruth.collect.compute_shard` and token budget): float32 with the
  sketch, bf16 autocast with the sketch, float32 without a sketch (the fast path's own
  exactness, apart from the projection's).
* ``kronfluence``: Kronfluence's pairwise scores with the ``identity`` strategy (no
  preconditioning: per-sample gradient dot products), over the LoRA A and B modules, normalised
  by their diagonal (the self-scores) into cosines. It computes every sample's gradient twice
  here (as a query and as a training sample), and the training side once per query batch.
* ``bergson``: Bergson's ``collect_gradients`` (the hooks and on-disk index of ``bergson
  build``) on the adapter's modules as it finds them (``extract_peft_target_modules``), with its
  default ``IndexConfig`` (no random projection, ``token_batch_size`` 2048, float32).
"""

from __future__ import annotations

import common
import numpy as np


def cosines_of(rows) -> np.ndarray:
    """Pairwise cosines of the rows of ``rows``, float64."""
    rows = np.asarray(rows, dtype=np.float64)
    rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return rows @ rows.T


def cosines_of_gram(gram) -> np.ndarray:
    """Cosines from a matrix of dot products: ``G_ij / sqrt(G_ii G_jj)``."""
    gram = np.asarray(gram, dtype=np.float64)
    d = np.sqrt(np.diag(gram))
    return gram / np.outer(d, d)


class Plain:
    def __init__(self, model, ctx):
        self.model = model

    def __call__(self, samples):
        return cosines_of(common.plain_loop(self.model, samples, keep=True)), len(samples)


class Collect:
    """``collect``'s gradient pass: its computer, its token budget, its shard function."""

    def __init__(self, model, ctx, bf16: bool = False, dense: bool = False):
        from influcoder.groundtruth.collect import compute_shard, token_budget
        from influcoder.groundtruth.gradients import GradientComputer
        from influcoder.groundtruth.settings import CollectArguments

        self.computer = GradientComputer(
            model,
            target="lora",
            sketch_dim=0 if dense else ctx["sketch_dim"],
            sketch_seed=0,
            bf16=bf16,
            pad_token_id=ctx["pad_token_id"],
        )
        self.budget = token_budget(CollectArguments())
        self.compute_shard = compute_shard

    def __call__(self, samples):
        vectors, _ = self.compute_shard(self.computer, self.budget, samples)
        return cosines_of(vectors), len(samples)


class Kronfluence:
    """Pairwise scores of the samples against themselves, the ``identity`` strategy."""

    def __init__(self, model, ctx):
        import torch
        import torch.nn.functional as F
        from kronfluence.analyzer import Analyzer, prepare_model
        from kronfluence.arguments import FactorArguments, ScoreArguments
        from kronfluence.task import Task
        from kronfluence.utils.dataset import DataLoaderKwargs

        from influcoder.groundtruth.lora import gradient_modules
        from influcoder.groundtruth.loss import pad_batch

        names = [name for name, _ in gradient_modules(model, "lora")]
        pad = ctx["pad_token_id"]

        class LoraTask(Task):
            """The response tokens' cross-entropy summed over the batch, as Kronfluence's own
            language-model examples write it: a sample's gradient is then that of its own
            summed loss, the plain loop's (a mean) times a constant, so the same cosines."""

            def compute_train_loss(self, batch, model, sample=False):
                logits = model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits.float()
                logits = logits[..., :-1, :].contiguous()
                labels = batch["labels"][..., 1:].contiguous()
                return F.cross_entropy(
                    logits.view(-1, logits.size(-1)),
                    labels.view(-1),
                    ignore_index=-100,
                    reduction="sum",
                )

            def compute_measurement(self, batch, model):
                return self.compute_train_loss(batch, model)

            def get_influence_tracked_modules(self):
                return names

            def get_attention_mask(self, batch):
                return batch["attention_mask"]

        def collate(items):  # collect's own right-padding
            ids, mask, labels = pad_batch(items, pad, torch.device("cpu"))
            return {"input_ids": ids, "labels": labels, "attention_mask": mask}

        self.model = prepare_model(model, LoraTask())
        self.analyzer = Analyzer(
            "peers",
            self.model,
            LoraTask(),
            cpu=True,
            disable_tqdm=True,
            output_dir=str(ctx["scratch"] / "kronfluence"),
        )
        self.loader = DataLoaderKwargs(collate_fn=collate)
        self.factor_args = FactorArguments(strategy="identity")
        self.score_args = ScoreArguments(
            per_sample_gradient_dtype=torch.float32, score_dtype=torch.float32
        )
        self.query_batch, self.train_batch = ctx["kronfluence_batches"]
        self.calls = 0

    def __call__(self, samples):
        # given sorted by length (less padding: a kindness Kronfluence's own loaders lack)
        order = np.argsort([len(s.input_ids) for s in samples], kind="stable")
        data = [samples[i] for i in order]
        self.calls += 1
        name = f"run{self.calls}"
        self.analyzer.fit_all_factors(
            name,
            dataset=data,
            factor_args=self.factor_args,
            dataloader_kwargs=self.loader,
            overwrite_output_dir=True,
        )
        self.analyzer.compute_pairwise_scores(
            name,
            factors_name=name,
            query_dataset=data,
            train_dataset=data,
            per_device_query_batch_size=self.query_batch,
            per_device_train_batch_size=self.train_batch,
            dataloader_kwargs=self.loader,
            score_args=self.score_args,
            overwrite_output_dir=True,
        )
        scores = self.analyzer.load_pairwise_scores(name)["all_modules"].double().numpy()
        back = np.argsort(order)
        query_batches = -(-len(data) // self.query_batch)
        return cosines_of_gram(scores[np.ix_(back, back)]), len(data) * (query_batches + 1)


class Bergson:
    """``bergson build``'s gradient pass on the loaded model, into an index on disk."""

    def __init__(self, model, ctx):
        from bergson.utils.worker_utils import extract_peft_target_modules

        self.model, self.scratch, self.calls = model, ctx["scratch"] / "bergson", 0
        self.targets = extract_peft_target_modules(model)
        # as bergson's setup_model_and_peft leaves a loaded adapter: the backward pass rooted
        # at the input embeddings, no weight gradient accumulated
        model.requires_grad_(False)
        model.get_input_embeddings().requires_grad_(True)

    def __call__(self, samples):
        from bergson.collection import collect_gradients
        from bergson.config.config import IndexConfig
        from bergson.data import allocate_batches, load_gradients
        from bergson.utils.worker_utils import create_processor
        from datasets import Dataset

        self.calls += 1
        cfg = IndexConfig(run_path=str(self.scratch / f"run{self.calls}"))
        cfg.partial_run_path.mkdir(parents=True, exist_ok=True)
        lengths = [len(s.input_ids) for s in samples]
        data = Dataset.from_dict(
            {
                "input_ids": [list(s.input_ids) for s in samples],
                "labels": [list(s.labels) for s in samples],
                "length": lengths,
            }
        )
        processor = create_processor(self.model, cfg, self.targets)
        batches = allocate_batches(lengths, cfg.token_batch_size, max_batch_size=cfg.max_batch_size)
        collect_gradients(
            self.model, data, processor, cfg, batches=batches, target_modules=self.targets
        )
        return cosines_of(load_gradients(cfg.partial_run_path)), len(samples)


METHODS = {
    "plain": Plain,
    "collect": Collect,
    "collect-bf16": lambda model, ctx: Collect(model, ctx, bf16=True),
    "collect-dense": lambda model, ctx: Collect(model, ctx, dense=True),
    "kronfluence": Kronfluence,
    "bergson": Bergson,
}

#: what each row is, for the table and the JSON
DESCRIPTIONS = {
    "plain": "plain loop: 1 sample, .backward(), dense .grad, fp32",
    "collect": "influcoder collect fast path, fp32, CountSketch {sketch_dim}",
    "collect-bf16": "influcoder collect fast path, bf16 autocast, CountSketch {sketch_dim}",
    "collect-dense": "influcoder collect fast path, fp32, no sketch (dense)",
    "kronfluence": "Kronfluence 'identity' pairwise, fp32, dense; batches {kronfluence_batches}",
    "bergson": "Bergson collect_gradients, fp32, default (no projection), 2048-token batches",
}
