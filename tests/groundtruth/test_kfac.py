"""K-FAC preconditioning (``collect --precondition kfac``): the factors against a
one-sample-at-a-time autograd reference, the damped inverse roots, the preconditioned
gradients against the dense reference, and the recipe recorded, saved and reused by --like."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from .test_recipes import FAST, WARM, collect, run, store_reference


@pytest.fixture()
def warmed(tiny_model, tokenized):
    from influcoder.groundtruth.lora import attach_lora, warmup

    model = attach_lora(tiny_model, seed=0)
    warmup(model, [tokenized[:4], tokenized[4:8]], steps=3, lr=1e-2, seed=0)  # B != 0
    return model


def test_factors_equal_the_per_sample_reference(warmed, tokenized):
    """Padded batches of unequal lengths give the factors of unpadded samples taken one by
    one: padded positions are masked out of A, and their g is zero."""
    from influcoder.groundtruth.kfac import fit_kfac
    from influcoder.groundtruth.lora import gradient_modules
    from tests.references import reference_kfac

    modules = gradient_modules(warmed, "lora")
    assert len({len(s.input_ids) for s in tokenized[:4]}) > 1  # padding happens
    fast = fit_kfac(warmed, [tokenized[:4], tokenized[4:]], modules)
    ref = reference_kfac(warmed, tokenized, modules)
    assert sorted(fast) == sorted(ref) and len(fast) == 2 * len(modules)
    for key in ref:
        np.testing.assert_allclose(fast[key].numpy(), ref[key].numpy(), rtol=2e-4, atol=1e-9)
        assert fast[key].abs().max() > 0


def test_inverse_root_is_the_damped_inverse_square_root():
    from influcoder.groundtruth.kfac import inverse_root

    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(50, 6)), dtype=torch.float32)
    factor = x.T @ x / 50
    root = inverse_root(factor, damping=0.1).double()
    shift = 0.1 * float(torch.linalg.eigvalsh(factor.double()).mean())
    damped = factor.double() + shift * torch.eye(6, dtype=torch.float64)
    np.testing.assert_allclose((root @ damped @ root).numpy(), np.eye(6), atol=1e-5)
    np.testing.assert_allclose(root.numpy(), root.T.numpy(), atol=1e-6)


@pytest.mark.parametrize("target", ["lora", "lora-b"])
def test_kfac_gradients_equal_the_dense_reference(warmed, tokenized, tiny_tokenizer, target):
    from influcoder.groundtruth.gradients import GradientComputer
    from influcoder.groundtruth.kfac import fit_kfac
    from influcoder.groundtruth.lora import gradient_modules
    from tests.references import reference_gradients

    factors = fit_kfac(warmed, [tokenized[:4], tokenized[4:]], gradient_modules(warmed, "lora"))
    opts = dict(target=target, sketch_dim=48, sketch_seed=1)
    computer = GradientComputer(
        warmed, pad_token_id=tiny_tokenizer.pad_token_id, kfac=factors, **opts
    )
    fast, norms = computer.vectors_and_norms(tokenized)
    ref, ref_norms = reference_gradients(warmed, tokenized, kfac=factors, with_norms=True, **opts)
    np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(norms, ref_norms, rtol=1e-4)
    plain = GradientComputer(warmed, pad_token_id=tiny_tokenizer.pad_token_id, **opts)(tokenized)
    assert np.abs(plain - fast).max() > 0.05  # preconditioning changes the direction


def test_kfac_refuses_missing_blocks_and_adam_together(warmed):
    from influcoder.groundtruth.gradients import GradientComputer

    with pytest.raises(ValueError, match="no K-FAC factors for"):
        GradientComputer(warmed, target="lora", sketch_dim=8, kfac={})
    with pytest.raises(ValueError, match="do not combine"):
        GradientComputer(warmed, target="lora", sketch_dim=8, kfac={}, preconditioner={})


def test_collect_precondition_kfac_records_saves_and_reuses_the_factors(
    tiny_model_dir, small_data, tmp_path
):
    from influcoder.groundtruth.precondition import load_moments, moments_digest

    from ..conftest import write_jsonl
    from .test_recipes import QUERIES

    pool = collect(
        small_data,
        tmp_path / "p",
        "--model",
        tiny_model_dir,
        "--precondition",
        "kfac",
        *WARM,
        *FAST,
    )
    saved = pool.path / "adapter" / "preconditioner.safetensors"
    factors = load_moments(saved)
    recipe = pool.setup["gradient"]["precondition"]
    assert recipe == {
        "kind": "kfac",
        "source": "pool-sample",
        "damping": 0.1,
        "sha256": moments_digest(factors),
    }
    unit, norms = store_reference(pool, kfac=factors)
    np.testing.assert_allclose(pool.vectors(), unit, rtol=1e-3, atol=2e-3)
    np.testing.assert_allclose(pool.norms(), norms, rtol=1e-4)
    queries = collect(
        write_jsonl(tmp_path / "q.jsonl", QUERIES), tmp_path / "q", "--like", pool.path
    )
    assert queries.setup == pool.setup
    assert (
        queries.path / "adapter" / "preconditioner.safetensors"
    ).read_bytes() == saved.read_bytes()
    r = run("score", pool.path, queries.path, "-k", "1", "--similarity", "inner")
    assert r.exit_code == 0, r.output
