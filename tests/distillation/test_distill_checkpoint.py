"""A killed distillation run resumes from its last epoch checkpoint and ends exactly as an
uninterrupted run does; another run's checkpoint is refused."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from influcoder.distillation import blocks, checkpoint, distill, trainer
from influcoder.distillation.settings import DistillArguments
from influcoder.distillation.trainer import CARD_NAME
from influcoder.errors import InflucoderError

# Dropout is on (the tiny BERT's default 0.1), so a resume that did not restore torch's
# generator, the block sampler's generator or AdamW's moments would end with other weights.
ARGS = {
    "epochs": 3,
    "lr": 3e-3,
    "batch_pool": 16,
    "batch_query": 4,
    "val_fraction": 0.25,
    "patience": 3,
    "steps_per_epoch": 3,
}


class Killed(BaseException):
    """Stands for the process being killed: not an Exception, so nothing catches it."""


def kill_at_step(monkeypatch, step: int) -> None:
    """Make the ``step``-th training block (from 1) raise :class:`Killed`."""
    original = blocks.BlockSampler.sample
    calls = {"n": 0}

    def sample(self):
        calls["n"] += 1
        if calls["n"] == step:
            raise Killed
        return original(self)

    monkeypatch.setattr(blocks.BlockSampler, "sample", sample)


def two_views(texts):
    """Each text with a second view, its last three words (as a response would be)."""
    return [(t, " ".join(t.split()[-3:])) for t in texts]


def run(encoder_dir, planted, out, gt=None, views=1, **changes):
    encoder = SentenceTransformer(encoder_dir, device="cpu")
    items = (lambda texts: texts) if views == 1 else two_views
    result = distill(
        encoder,
        items(planted.pool_texts),
        items(planted.query_texts),
        planted.gt if gt is None else gt,
        DistillArguments(**{**ARGS, **changes}),
        out_dir=out,
        progress=False,
    )
    return encoder, result


def without_seconds(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


@pytest.mark.parametrize("micro_batch,views", [(DistillArguments().micro_batch, 1), (4, 1), (4, 2)])
def test_killed_run_resumes_to_the_uninterrupted_result(
    tiny_encoder_dir, planted, tmp_path, monkeypatch, caplog, micro_batch, views
):
    """Also with each step's 20 texts cut into micro-batches of 4: dropout's draws then come
    in five forward passes, and must still replay exactly; and trained through two views."""
    whole, whole_result = run(
        tiny_encoder_dir, planted, tmp_path / "whole", micro_batch=micro_batch, views=views
    )

    out = tmp_path / "killed"
    with monkeypatch.context() as m:
        kill_at_step(m, 2 * ARGS["steps_per_epoch"] + 2)  # in the middle of epoch 3
        with pytest.raises(Killed):
            run(tiny_encoder_dir, planted, out, micro_batch=micro_batch, views=views)
    ckpt = checkpoint.checkpoint_dir(out)
    assert not out.exists()  # no half-written encoder
    assert json.loads((ckpt / checkpoint.STATE_NAME).read_text())["epoch"] == 2
    assert {p.suffix for p in ckpt.iterdir()} == {".safetensors", ".json"}  # nothing pickled
    with caplog.at_level(logging.INFO, logger="influcoder"):
        resumed, resumed_result = run(
            tiny_encoder_dir, planted, out, micro_batch=micro_batch, views=views
        )
    assert "resuming from" in caplog.text
    assert not ckpt.exists()  # removed once the encoder is written
    expected, got = whole.state_dict(), resumed.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert without_seconds(resumed_result.history) == without_seconds(whole_result.history)
    assert resumed_result.best_epoch == whole_result.best_epoch
    assert resumed_result.untrained == whole_result.untrained
    card = json.loads((out / CARD_NAME).read_text())
    assert without_seconds(card["history"]) == without_seconds(whole_result.history)
    np.testing.assert_array_equal(
        SentenceTransformer(str(out), device="cpu").encode(planted.query_texts[:4]),
        SentenceTransformer(str(tmp_path / "whole"), device="cpu").encode(planted.query_texts[:4]),
    )


def test_resume_restores_the_best_weights_too(tiny_encoder_dir, planted, tmp_path, monkeypatch):
    """Best epoch 1, killed in epoch 3: the weights kept must be epoch 1's, from the checkpoint."""
    figures = [0.1, 0.5, 0.2, 0.3]  # untrained, epochs 1-3: epoch 1 is best

    def scripted(seen):
        def evaluate(encoder, *args, **kwargs):
            seen.append({k: v.clone() for k, v in encoder.state_dict().items()})
            return dict.fromkeys(trainer.METRICS, figures[len(seen) - 1])

        return evaluate

    whole_states: list = []
    monkeypatch.setattr(trainer, "validation_figures", scripted(whole_states))
    whole, _ = run(tiny_encoder_dir, planted, tmp_path / "whole")

    killed_states: list = []
    monkeypatch.setattr(trainer, "validation_figures", scripted(killed_states))
    with monkeypatch.context() as m:
        kill_at_step(m, 2 * ARGS["steps_per_epoch"] + 1)
        with pytest.raises(Killed):
            run(tiny_encoder_dir, planted, tmp_path / "out")
    resumed, result = run(tiny_encoder_dir, planted, tmp_path / "out")
    assert result.best_epoch == 1
    got = resumed.state_dict()
    assert all(torch.equal(got[k], v) for k, v in whole_states[1].items())
    assert all(torch.equal(got[k], v) for k, v in whole.state_dict().items())


def killed_checkpoint(tiny_encoder_dir, planted, out, monkeypatch):
    with monkeypatch.context() as m:
        kill_at_step(m, ARGS["steps_per_epoch"] + 1)
        with pytest.raises(Killed):
            run(tiny_encoder_dir, planted, out)
    assert checkpoint.checkpoint_dir(out).is_dir()


def test_checkpoint_of_another_run_is_refused(tiny_encoder_dir, planted, tmp_path, monkeypatch):
    out = tmp_path / "out"
    killed_checkpoint(tiny_encoder_dir, planted, out, monkeypatch)
    with pytest.raises(
        InflucoderError,
        match=r"another distillation run(.|\n)*args\.lr: "
        r"0\.003 vs 0\.001",
    ):
        run(tiny_encoder_dir, planted, out, lr=1e-3)
    gt = planted.gt.copy()
    gt[0, 0] += 0.5
    with pytest.raises(InflucoderError, match="texts_and_ground_truth_sha256"):
        run(tiny_encoder_dir, planted, out, gt=gt)
    other = SentenceTransformer(tiny_encoder_dir, device="cpu")
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    other.save(str(tmp_path / "other"))
    with pytest.raises(InflucoderError, match="starting_encoder_sha256"):
        run(str(tmp_path / "other"), planted, out)
    assert checkpoint.checkpoint_dir(out).is_dir() and not out.exists()  # left as it was


def test_unreadable_checkpoint_names_the_file(tiny_encoder_dir, planted, tmp_path, monkeypatch):
    out = tmp_path / "out"
    killed_checkpoint(tiny_encoder_dir, planted, out, monkeypatch)
    state = checkpoint.checkpoint_dir(out) / checkpoint.STATE_NAME
    state.write_text("{not json")
    with pytest.raises(InflucoderError, match=f"{state}: unreadable distillation checkpoint"):
        run(tiny_encoder_dir, planted, out)


def test_no_checkpoint_without_an_output_directory(tiny_encoder, planted, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    distill(
        tiny_encoder,
        planted.pool_texts,
        planted.query_texts,
        planted.gt,
        DistillArguments(**ARGS),
        progress=False,
    )
    assert list(tmp_path.iterdir()) == []
