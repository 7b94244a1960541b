# The two entry points of the README. Both install what is missing first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: iso disk keys test deps unit clean

deps: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install-deps cosbuild/programs.py
	./scripts/install-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The sample live ISO: validate, render and build every package, make build/ a package
# repository, assemble the ISO from iso.yaml; prints where it is.
iso: keys
	$(BIN)/doit -n 2 -P thread validate render build repo iso
	@ls build/*.iso | sed 's/^/ISO: /'

# The installed disk of disk.yaml: build/active.img, build/sampleOS-0.disk.raw and .qcow2.
disk: keys
	$(BIN)/doit -n 2 -P thread validate build repo image disk

# The sample's signing keys in keys/, made on the first build (README "Signed upgrades"), and
# the copy of their public root that the system image trusts. A doit run of its own: the
# builds after it must load the tree with that copy in it.
keys: deps
	$(BIN)/doit keys

# The whole test suite: fast unit tests and the slow integration tests.
test: deps
	$(BIN)/pytest -ra

# Only the fast unit tests.
unit: deps
	$(BIN)/pytest -ra -m "not integration"

clean:
	rm -rf build
