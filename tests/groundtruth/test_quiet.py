"""``-q`` silences every progress bar and stage line, ours and the libraries', and restores the
libraries' settings afterwards; ``--adapter`` reports the adapter's own targets."""

from __future__ import annotations

import json

from influcoder.cli import cli

FAST = ["--sketch-dim", "64", "--max-length", "64", "--batch-size", "4", "--shard-rows", "4"]


def invoke(*args):
    """The CLI in-process without click's runner, so bars go to the real (captured) stderr."""
    try:
        cli.main(args=[str(a) for a in args], prog_name="influcoder", standalone_mode=False)
    except SystemExit as e:  # pragma: no cover - a failure shows in the assert below
        assert e.code == 0


def test_quiet_collect_prints_no_bar_and_restores(tiny_model_dir, small_data, tmp_path, capfd):
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils.logging import is_progress_bar_enabled

    bars_before = is_progress_bar_enabled(), are_progress_bars_disabled()
    invoke("collect", small_data, "-o", tmp_path / "pool", "--model", tiny_model_dir, *FAST, "-q")
    err = capfd.readouterr().err
    assert "wrote" in err  # the result line stays
    for mark in ("it/s", "s/it", "%|", "Loading weights", "warm-up", "step"):
        assert mark not in err, err
    assert (is_progress_bar_enabled(), are_progress_bars_disabled()) == bars_before

    # without -q, the warm-up shows: the test above can fail
    invoke("collect", small_data, "-o", tmp_path / "loud", "--model", tiny_model_dir, *FAST)
    err = capfd.readouterr().err
    assert "warm-up" in err, err


def test_adapter_reports_its_own_targets(tiny_model_dir, small_data, tmp_path, capfd):
    """Collecting with --adapter says and records the adapter's own targets, not the
    defaults, and that the adapter was given, not warmed up."""
    pool, out = tmp_path / "pool", tmp_path / "again"
    mine = ["--lora-targets", "q_proj,v_proj", "--lora-rank", "4", "--warmup-steps", "1"]
    invoke("collect", small_data, "-o", pool, "--model", tiny_model_dir, *FAST, *mine, "-q")
    capfd.readouterr()
    adapter = pool / "adapter"
    invoke("collect", small_data, "-o", out, "--adapter", adapter, "--model", tiny_model_dir, *FAST)
    err = capfd.readouterr().err
    assert f"LoRA adapter {adapter}: targets q_proj, v_proj, rank 4, alpha 16" in err, err
    manifest = json.loads((out / "manifest.json").read_text())
    arguments = manifest["provenance"]["arguments"]
    assert arguments["adapter"] == str(adapter)
    assert arguments["adapter_init"] == "given"
    assert (arguments["lora_targets"], arguments["lora_rank"]) == (["q_proj", "v_proj"], 4)
    assert manifest["setup"]["adapter"]["targets"] == ["q_proj", "v_proj"]
    # the same command resumes the store (its recorded settings read back the same)
    invoke("collect", small_data, "-o", out, "--adapter", adapter, "--model", tiny_model_dir, *FAST)
    assert "wrote" in capfd.readouterr().err
