"""K-FAC preconditioning (``collect --precondition kfac``): the factors against a
one-sample-at-a-time autograd reference, input factors shared by the modules that read one
tensor, the damped inverse roots, the preconditioned gradients against the dense reference,
and the recipe recorded, saved (roots, once each) and reused by --like without decomposing
again; files of the first layout (one pair of factors per block) still give the same rows."""

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
    fast = fit_kfac(warmed, [tokenized[:4], tokenized[4:]], modules).per_block()
    ref = reference_kfac(warmed, tokenized, modules)
    assert sorted(fast) == sorted(ref) and len(fast) == 2 * len(modules)
    for key in ref:
        np.testing.assert_allclose(fast[key].numpy(), ref[key].numpy(), rtol=2e-4, atol=1e-9)
        assert fast[key].abs().max() > 0


def test_modules_reading_one_tensor_share_their_input_factor(warmed, tokenized):
    """The lora_A of q/k/v (and of gate/up) read one tensor: one input factor each group,
    equal to the factor fitted for each module alone; nothing else is shared."""
    from influcoder.groundtruth.kfac import fit_kfac
    from influcoder.groundtruth.lora import gradient_modules

    modules = gradient_modules(warmed, "lora")
    batches = [tokenized[:4], tokenized[4:]]
    fitted = fit_kfac(warmed, batches, modules)
    groups: dict[str, list[str]] = {}
    for block, (in_key, _) in fitted.blocks.items():
        parts = block.split(".")
        layer, proj, lora = parts[parts.index("layers") + 1], parts[-4], parts[-3]
        groups.setdefault(in_key, []).append(f"{layer} {proj} {lora}")
    shared = sorted(" ".join(sorted(g)) for g in groups.values() if len(g) > 1)
    layers = sorted({g.split()[0] for gs in groups.values() for g in gs})
    assert shared == sorted(
        [f"{i} k_proj lora_A {i} q_proj lora_A {i} v_proj lora_A" for i in layers]
        + [f"{i} gate_proj lora_A {i} up_proj lora_A" for i in layers]
    )
    assert len(fitted.factors) == 2 * len(modules) - 3 * len(layers)
    by_name = dict(modules)
    for block, (in_key, out_key) in fitted.blocks.items():
        name = block.removesuffix(".weight")
        alone = fit_kfac(warmed, batches, [(name, by_name[name])])
        assert list(alone.blocks) == [block]
        for key, own in zip((in_key, out_key), alone.blocks[block]):
            np.testing.assert_allclose(
                fitted.factors[key].numpy(), alone.factors[own].numpy(), rtol=1e-6, atol=1e-9
            )


def test_an_input_is_shared_only_between_single_reads_of_one_tensor():
    """A block may take another's input factor only when both read that tensor once, the same
    way in every forward (a module called twice would mix two inputs into one factor)."""
    from influcoder.groundtruth.kfac import IN_KEY, _settle_inputs

    q, k = "q.weight", "k.weight"
    inputs: dict[str, str] = {}
    _settle_inputs({q: [q + IN_KEY], k: [q + IN_KEY]}, inputs)
    assert inputs == {q: q + IN_KEY, k: q + IN_KEY}
    _settle_inputs({q: [q + IN_KEY, q + IN_KEY]}, {})  # its own inputs, twice: fine
    with pytest.raises(ValueError, match="but not only that once"):
        _settle_inputs({q: [q + IN_KEY, q + IN_KEY], k: [q + IN_KEY]}, {})
    with pytest.raises(ValueError, match="but not only that once"):
        _settle_inputs({q: [q + IN_KEY], k: [q + IN_KEY, k + IN_KEY]}, {})
    with pytest.raises(ValueError, match="from one forward to the next"):
        _settle_inputs({q: [q + IN_KEY], k: [k + IN_KEY]}, inputs)


def test_packed_upper_triangles_read_back():
    from influcoder.groundtruth.kfac import pack_upper, unpack_upper

    x = torch.randn(5, 5)
    sym = x + x.T
    packed = pack_upper(sym)
    assert packed.shape == (15,) and torch.equal(unpack_upper(packed), sym)
    with pytest.raises(ValueError, match="no packed upper triangle"):
        unpack_upper(packed[:-1])


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
    ref, ref_norms = reference_gradients(
        warmed, tokenized, kfac=factors.per_block(), with_norms=True, **opts
    )
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


def test_saved_roots_give_the_rows_of_the_first_layout(warmed, tokenized, tiny_tokenizer, tmp_path):
    """Roots saved once per shared factor, read back, are the matrices the first layout's
    per-block factors give, and the rows are the same; roots damped otherwise are refused."""
    from influcoder.groundtruth.gradients import GradientComputer
    from influcoder.groundtruth.kfac import KFAC_DAMPING, fit_kfac, kfac_transforms
    from influcoder.groundtruth.lora import gradient_modules
    from influcoder.groundtruth.precondition import load_moments, save_moments

    fitted = fit_kfac(warmed, [tokenized[:4], tokenized[4:]], gradient_modules(warmed, "lora"))
    files = {"first": tmp_path / "first.safetensors", "roots": tmp_path / "roots.safetensors"}
    save_moments(files["first"], fitted.per_block())
    save_moments(files["roots"], fitted.roots().saved())
    first, roots = load_moments(files["first"]), load_moments(files["roots"])
    assert files["roots"].stat().st_size < files["first"].stat().st_size
    blocks = [
        (block, fitted.factors[i].shape[0] * fitted.factors[o].shape[0])
        for block, (i, o) in fitted.blocks.items()
    ]
    old, new = kfac_transforms(first, blocks), kfac_transforms(roots, blocks)
    for block, _ in blocks:
        for a, b in zip(old[block], new[block]):  # b: a's upper triangle, mirrored
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
            assert torch.equal(b, b.T)
    opts = dict(
        target="lora", sketch_dim=48, sketch_seed=1, pad_token_id=tiny_tokenizer.pad_token_id
    )
    rows = [GradientComputer(warmed, kfac=k, **opts)(tokenized) for k in (first, roots, fitted)]
    np.testing.assert_array_equal(rows[0], rows[2])  # the first layout: roots as they were
    np.testing.assert_allclose(rows[0], rows[1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="damped with 0.1, not 0.2"):
        kfac_transforms(roots, blocks, damping=2 * KFAC_DAMPING)


def test_collect_precondition_kfac_records_saves_and_reuses_the_factors(
    tiny_model_dir, small_data, tmp_path, monkeypatch
):
    """The pool decomposes each distinct factor once and saves the roots; --like loads them
    and decomposes nothing."""
    from influcoder.groundtruth.kfac import LAYOUT_KEY, KfacRoots
    from influcoder.groundtruth.precondition import load_moments, moments_digest

    from ..conftest import write_jsonl
    from .test_recipes import QUERIES

    eigh, calls = torch.linalg.eigh, []

    def counted(*args, **kwargs):
        calls.append(1)
        return eigh(*args, **kwargs)

    monkeypatch.setattr(torch.linalg, "eigh", counted)
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
    content = load_moments(saved)
    roots = KfacRoots.from_saved(content)
    assert len(calls) == len(roots.roots) == len(content) - 1 < 2 * len(roots.blocks)
    assert roots.damping == 0.1 and LAYOUT_KEY in content
    recipe = pool.setup["gradient"]["precondition"]
    assert recipe == {
        "kind": "kfac",
        "source": "pool-sample",
        "damping": 0.1,
        "sha256": moments_digest(content),
    }
    per_block = {b: (roots.roots[i], roots.roots[o]) for b, (i, o) in roots.blocks.items()}
    unit, norms = store_reference(pool, kfac=per_block)
    np.testing.assert_allclose(pool.vectors(), unit, rtol=1e-3, atol=2e-3)
    np.testing.assert_allclose(pool.norms(), norms, rtol=1e-4)
    calls.clear()
    queries = collect(
        write_jsonl(tmp_path / "q.jsonl", QUERIES), tmp_path / "q", "--like", pool.path
    )
    assert calls == []
    assert queries.setup == pool.setup
    assert (
        queries.path / "adapter" / "preconditioner.safetensors"
    ).read_bytes() == saved.read_bytes()
    r = run("score", pool.path, queries.path, "-k", "1", "--similarity", "inner")
    assert r.exit_code == 0, r.output


def test_stores_of_the_first_layout_keep_their_rows(
    tiny_model_dir, small_data, tokenized, tmp_path
):
    """A store whose file holds one pair of factors per block (the first layout) opens with
    --like and gives the rows the same factors give as saved roots, and the reference's."""
    import json
    import shutil

    from transformers import AutoModelForCausalLM

    from influcoder.groundtruth.kfac import fit_kfac
    from influcoder.groundtruth.lora import gradient_modules, load_adapter
    from influcoder.groundtruth.precondition import moments_digest, save_moments

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
    model = load_adapter(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="float32"),
        pool.path / "adapter",
    )
    data = write_jsonl(tmp_path / "q.jsonl", QUERIES)
    fitted = fit_kfac(model, [tokenized[:4], tokenized[4:]], gradient_modules(model, "lora"))
    rows = {}
    for layout, content in (("first", fitted.per_block()), ("roots", fitted.roots().saved())):
        store = tmp_path / layout
        shutil.copytree(pool.path, store)
        save_moments(store / "adapter" / "preconditioner.safetensors", content)
        manifest = json.loads((store / "manifest.json").read_text())
        manifest["setup"]["gradient"]["precondition"]["sha256"] = moments_digest(content)
        (store / "manifest.json").write_text(json.dumps(manifest))
        rows[layout] = collect(data, tmp_path / f"q_{layout}", "--like", store)
    np.testing.assert_allclose(
        rows["first"].vectors(), rows["roots"].vectors(), rtol=1e-5, atol=1e-6
    )
    unit, _ = store_reference(rows["first"], kfac=fitted.per_block())
    np.testing.assert_allclose(rows["first"].vectors(), unit, rtol=1e-3, atol=2e-3)
