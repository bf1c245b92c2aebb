# Two commands on a fresh clone: `make run` and `make test`. Nothing else is needed but python3 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The core and every bundled distribution, installed editable; a new plugin adds its folder here.
DISTS := . plugins/ollama plugins/cloud plugins/myfatoorah plugins/whatsapp examples/plugin-hello portal_app
PYPROJECTS := $(addsuffix /pyproject.toml,$(DISTS))

.PHONY: run test lint typecheck unit bench clean

$(STAMP): $(PYPROJECTS) constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt \
		-e ".[dev]" $(foreach dist,$(filter-out .,$(DISTS)),-e "$(dist)[dev]")
	@$(BIN)/python -c "import resayil_gateway, resayil_ollama, resayil_cloud, resayil_myfatoorah, resayil_whatsapp, resayil_portal" && touch $(STAMP)

run: $(STAMP)
	RESAYIL_DISABLE_PLUGINS=$${RESAYIL_DISABLE_PLUGINS:-hello} $(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy resayil_gateway plugins/ollama/resayil_ollama plugins/cloud/resayil_cloud \
		plugins/myfatoorah/resayil_myfatoorah plugins/whatsapp/resayil_whatsapp portal_app/resayil_portal

unit: $(STAMP)
	@$(BIN)/python -m resayil_gateway.testing --describe-stacks
	$(BIN)/python -m pytest -q -rs

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
