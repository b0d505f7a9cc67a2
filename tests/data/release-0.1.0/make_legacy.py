"""Writes stores and an index with the release this runs on (used once, to freeze tests/data).

Run from the repository root of that release: python tests/data/release-0.1.0/make_legacy.py OUT
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
import influcoder
from influcoder.groundtruth.settings import CollectArguments
from influcoder.io.samples import Sample
from tests.conftest import build_tiny_llama, build_tiny_tokenizer
from tests.tiny_encoders import build_tiny_encoder

out = Path(sys.argv[1])
shutil.rmtree(out, ignore_errors=True)
out.mkdir(parents=True)
work = Path(tempfile.mkdtemp(prefix="legacy_work"))
tok = build_tiny_tokenizer()
model = build_tiny_llama(len(tok))
model.save_pretrained(work / "llama")
tok.save_pretrained(work / "llama")
enc = build_tiny_encoder(work / "encoder")
rows = [
    ("What is the capital of France?", "Paris."),
    ("How do I boil an egg?", "Boil it for nine minutes."),
    ("Tell me a joke.", "Why did the chicken cross the road?"),
    ("Explain gravity.", "Gravity pulls masses together."),
    ("Write a poem about the sea.", "The sea is blue and deep."),
    ("What is two plus two?", "Four."),
]
pool = [Sample(id=f"p{i}", prompt=p, response=r) for i, (p, r) in enumerate(rows)]
queries = [
    Sample(id="q0", prompt="What is the capital of Italy?", response="Rome."),
    Sample(id="q1", prompt="How do I fry an egg?", response="Heat oil and crack the egg in."),
]
args = CollectArguments(
    model=str(work / "llama"),
    sketch_dim=64,
    shard_rows=4,
    warmup_steps=2,
    warmup_batch_size=2,
    max_length=64,
)
influcoder.groundtruth.collect(pool, out / "grad_pool", args, progress=False)
with open(work / "pool.jsonl", "w") as f:
    for s in pool:
        f.write(json.dumps({"id": s.id, "prompt": s.prompt, "response": s.response}) + "\n")
influcoder.build_index(work / "pool.jsonl", out / "index", str(enc), progress=False)
print(sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()))
