# The two entry points of the README. Both install what is missing first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: iso disk keys docs test test-all deps unit clean

deps: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install-deps cosbuild/programs.py
	./scripts/install-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The architecture to build for (docs/builds.md, Architectures): `make iso ARCH=arm64`
# builds into build-arm64/ from iso-arm64.yaml.
ARCH   ?= $(or $(COSBUILD_ARCH),$(shell dpkg --print-architecture))
OUT    := $(if $(filter amd64,$(ARCH)),build,build-$(ARCH))

# The sample live ISO: validate, render and build every package, make build/ a package
# repository, assemble the ISO from iso.yaml; prints where it is.
iso: keys
	$(BIN)/doit -n 2 -P thread arch=$(ARCH) validate render build repo iso
	@ls $(OUT)/*.iso | sed 's/^/ISO: /'

# The installed disk of disk.yaml: build/active.img, build/sampleOS-0.disk.raw and each of
# its `formats:` (qcow2, vmdk, vhdx, OVA, Vagrant boxes).
disk: keys
	$(BIN)/doit -n 2 -P thread validate build repo image disk

# The sample's signing keys in keys/, made on the first build (docs/runtime.md), and
# the copy of their public root that the system image trusts. A doit run of its own: the
# builds after it must load the tree with that copy in it.
keys: deps
	$(BIN)/doit keys

# The test tiers (docs/contributing.md). unit: no containers, no VMs, both cores. test: what CI
# runs, the unit tier then every integration test but the opt-in long boot cycles, one after
# another (they share one sample build, ISO and disk). test-all: the long cycles too.
unit: deps
	$(BIN)/pytest -ra -n 2 -m "not integration"

test: unit
	$(BIN)/pytest -ra -m integration

test-all: deps
	COSBUILD_TEST_BOOT_CYCLES=1 $(MAKE) test

# The guide's generated pages, from their one table each (tests/test_docs.py: current)
docs: deps
	for page in keywords settings cli; do $(BIN)/cosbuild docs $$page > docs/$$page.md; done

clean:
	rm -rf build
