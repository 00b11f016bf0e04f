# Both targets install what they need: the virtual environment, the Python
# packages and, when run as root, the Debian packages for sshd, PostgreSQL
# and Chromium.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo bench system-packages clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

system-packages:
	@./scripts/install-system-packages

test: system-packages $(STAMP)
	$(BIN)/pytest -n 2 --dist loadgroup

demo: system-packages $(STAMP)
	$(BIN)/python scripts/demo.py

bench: system-packages $(STAMP)
	$(BIN)/python bench/sign_bench.py
	$(BIN)/python bench/issue_bench.py --database sqlite
	$(BIN)/python bench/issue_bench.py --database postgres
	$(BIN)/python bench/audit_query_bench.py

clean:
	rm -rf $(VENV) build *.egg-info
