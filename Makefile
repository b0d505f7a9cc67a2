# Two commands do all set-up on a fresh machine:
#   make demo   installs everything into .venv and runs the end-to-end demo
#   make test   installs everything into .venv and runs the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench clean

$(BIN)/influcoder: pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV) $(PY)
	touch $(BIN)/influcoder

install: $(BIN)/influcoder

demo: install
	$(BIN)/influcoder demo

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
