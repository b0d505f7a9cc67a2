"""Writes an ``hnsw`` and an ``ivf`` index with the FAISS classes built by hand (the code
before ``faiss.index_factory``, commit 2efdaa2), and what they answer, to freeze tests/data.

Run once, single-threaded so the HNSW graph is reproducible, with that code on the path:
    OMP_NUM_THREADS=1 PYTHONPATH=/path/to/2efdaa2/src:. python tests/data/faiss-classes/make.py
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from influcoder.attribution.build import build_index
from influcoder.io.samples import Sample
from tests.tiny_encoders import WORDS, build_tiny_encoder

out = Path(__file__).parent
work = Path(tempfile.mkdtemp(prefix="faiss_classes_work"))
encoder = build_tiny_encoder(work / "encoder")
rng = np.random.default_rng(0)
# 120 samples: enough for 3 IVF lists (at least 39 training rows per list).
samples = [
    Sample(
        id=f"s{i}", prompt=" ".join(rng.choice(WORDS, 6)), response=" ".join(rng.choice(WORDS, 10))
    )
    for i in range(120)
]
expected = {"made_by": "2efdaa2"}
for kind in ("hnsw", "ivf"):
    shutil.rmtree(out / kind, ignore_errors=True)
    index = build_index(
        samples, out / kind, str(encoder), backend="torch", approx=kind, progress=False
    )
    scores, rows = index.search(index.vectors()[:4], 5)
    expected[kind] = {
        "params": index.meta["faiss"]["params"],
        "search_rows": rows.tolist(),
        "search_scores": np.round(scores, 6).tolist(),
    }
(out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
print(json.dumps(expected)[:600], file=sys.stderr)
