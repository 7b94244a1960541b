# The two entry points of the README. Both install what is missing first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: iso test deps unit clean

deps: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install-deps
	./scripts/install-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The whole pipeline as far as it exists: validate, render and build every package, then
# make build/ a package repository. The ISO comes with the next issue.
iso: deps
	$(BIN)/doit -n 2 -P thread validate render build repo
	@echo "make iso: the pipeline currently stops after the package builds and the repository" \
	      "(build/repository.yaml); the ISO is not implemented yet."

# The whole test suite: fast unit tests and the slow integration tests.
test: deps
	$(BIN)/pytest -ra

# Only the fast unit tests.
unit: deps
	$(BIN)/pytest -ra -m "not integration"

clean:
	rm -rf build
