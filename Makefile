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

# After `make demo`: the causal check on the demo's stores (remove, retrain, measure; about an
# hour on 2 CPU cores, resumable). docs/VALIDATION.md explains it and shows our figures.
validate: install
	OMP_NUM_THREADS=1 $(BIN)/influcoder validate runs/demo/grad_pool runs/demo/grad_train_queries \
	    runs/demo/grad_test_queries --where label=harmful --label-field label --positive harmful \
	    -e distilled=runs/demo/encoder -e untrained=all-minilm-l6-v2 --lds-subsets 16 \
	    --out runs/demo/validate

clean:
	rm -rf $(VENV) runs
