import json
import sys
from pathlib import Path

import numpy as np

from influcoder.attribution.index import open_index
from influcoder.groundtruth.influence import cosine_scores
from influcoder.io.stores import open_store

d = Path(sys.argv[1])
pool, q = open_store(d / "grad_pool"), open_store(d / "grad_queries")
emb = open_store(d / "emb_pool").vectors()
idx = open_index(d / "index")
scores, rows = idx.search(emb[:2], 3)
json.dump(
    {
        "release": "0.1.0",
        "gradient_scores": cosine_scores(pool, q).round(6).tolist(),
        "index_ids": idx.ids,
        "index_search_rows": rows.tolist(),
        "index_search_scores": np.round(scores, 6).tolist(),
    },
    open(d / "expected.json", "w"),
    indent=1,
)
print(open(d / "expected.json").read()[:400])
