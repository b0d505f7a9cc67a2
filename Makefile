# Two commands do all set-up on a fresh machine:
#   make demo   installs everything into .venv and runs the end-to-end demo
#   make test   installs everything into .venv and runs the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint validate bench clean

$(BIN)/influcoder: pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV) $(PY)
	touch $(BIN)/influcoder

install: $(BIN)/influcoder

demo: install
	$(BIN)/influcoder demo

test: install
	$(BIN)/python -m pytest -q

# What CI checks besides the tests (`pre-commit install` runs the same on every commit).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# After `make demo`: the causal instrument on the demo (docs/VALIDATION.md): 60 half-pool
# retraining runs (two at a time), every method's LDS on 130 queries (validation block: the 40
# training queries; report block: the 18 test and 72 held-out queries), per block and kind,
# in lds.json and on one page, lds.html (each method's LDS with its interval, drawn and tabled;
# distilled+query-grad: the encoder's pool embeddings against each query's own gradient;
# repsim-layers: the decoder's own representations, every layer), and paired differences
# (distilled against BM25, untrained and Rep-Sim, the gradient against query-grad).
# About 57 minutes on 2 idle CPU cores; resumable (rerun it). VALIDATE_FLAGS=--dry-run estimates it.
LDS = runs/demo/lds
VALIDATE_FLAGS ?=
validate: install
	$(BIN)/influcoder collect runs/demo/data/lds_queries.jsonl --like runs/demo/grad_pool \
	    --out $(LDS)/grad_queries -q
	OMP_NUM_THREADS=1 $(BIN)/influcoder validate runs/demo/grad_pool $(LDS)/grad_queries \
	    $(LDS)/grad_queries --where label=harmful --baselines none --seeds 0 --lds-subsets 60 \
	    --lds-by part --label-field label --positive harmful --workers 2 --out $(LDS) $(VALIDATE_FLAGS)
	test -n "$(VALIDATE_FLAGS)" || $(BIN)/influcoder lds $(LDS)/runs runs/demo/grad_pool \
	    $(LDS)/grad_queries -e distilled=runs/demo/encoder -e untrained=all-minilm-l6-v2 \
	    --query-gradients --baselines bm25,tfidf,random,repsim-layers --by block,part \
	    --json $(LDS)/lds.json --paired distilled,bm25 --paired distilled,untrained \
	    --paired distilled,repsim-layers --paired gradient,distilled+query-grad \
	    --html $(LDS)/lds.html

clean:
	rm -rf $(VENV) runs
