# One entry point for a fresh machine: every target makes the virtualenv it needs.
PYTHON ?= python3
VENV   ?= .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.casty-deps
PYTEST_ARGS ?=
export PYTHONPATH := $(CURDIR)

.PHONY: all build test test-fast test-pure casty021 test-py314 lint bench bench-plot fuzz soak redteam clean distclean

all: build

$(VPY):
	$(PYTHON) -m venv $(VENV)

# Build deps first so the extension build needs no isolated environment.
$(STAMP): $(VPY) pyproject.toml
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q "setuptools>=77" wheel "cython>=3.0; python_version < '3.14'" \
		"cython>=3.1; python_version >= '3.14'"
	$(VPY) -m pip install -q --no-build-isolation -e ".[test,lint]"
	touch $(STAMP)

build: $(STAMP)
	CASTY_REQUIRE_EXTENSIONS=1 $(VPY) setup.py -q build_ext --inplace

# A casty 0.21.0 node from PyPI for tests/test_interop_021.py, in its own Python 3.12 venv
# (0.21 needs >= 3.12): python3.12 on PATH, else pyenv's 3.12.x; CASTY021_BASE_PYTHON picks one.
# With none it stops here: the interop tests are part of `make test`, never skipped by it.
CASTY021_VENV ?= .venv-casty021
CASTY021_PY := $(CASTY021_VENV)/bin/python
CASTY021_STAMP := $(CASTY021_VENV)/.casty-021
CASTY021_BASE_PYTHON ?=
# What the interop tests run the 0.21 node with; unset, they skip and name this target.
CASTY021_ENV = CASTY021_PYTHON=$(abspath $(CASTY021_PY))

casty021: $(CASTY021_STAMP)

# PYTHONPATH is cleared: this tree's casty must not shadow (or satisfy) the one installed.
$(CASTY021_STAMP):
	@base=""; \
	for c in $(CASTY021_BASE_PYTHON) python3.12 \
		$$(ls -d "$$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)"/versions/3.12*/bin/python 2>/dev/null | sort -V -r); do \
		if env -u PYTHONPATH "$$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; then \
			base=$$c; break; \
		fi; \
	done; \
	if [ -z "$$base" ]; then \
		echo "make casty021: no Python 3.12 found (not python3.12 on PATH, nor pyenv's versions/3.12*)."; \
		echo "  casty 0.21.0 needs Python >= 3.12 and the interop tests need it: install 3.12"; \
		echo "  (e.g. 'pyenv install 3.12') or set CASTY021_BASE_PYTHON=/path/to/python3.12."; \
		exit 1; \
	fi; \
	echo "casty021: $$base ($$(env -u PYTHONPATH $$base -c 'import sys; print(sys.version.split()[0])'))"; \
	rm -rf $(CASTY021_VENV) && env -u PYTHONPATH "$$base" -m venv $(CASTY021_VENV)
	env -u PYTHONPATH $(CASTY021_PY) -m pip install -q --disable-pip-version-check "casty==0.21.0"
	env -u PYTHONPATH $(CASTY021_PY) -P -c 'import casty; assert casty.__version__ == "0.21.0", casty.__version__'
	touch $@

# The whole suite runs twice: against the Cython build (which must load) and the pure twins.
test: build casty021
	$(MAKE) --no-print-directory test-fast test-pure

test-fast:
	$(CASTY021_ENV) CASTY_REQUIRE_EXTENSIONS=1 CASTY_NO_EXTENSIONS=0 $(VPY) -m pytest $(PYTEST_ARGS)

test-pure:
	$(CASTY021_ENV) CASTY_NO_EXTENSIONS=1 $(VPY) -m pytest $(PYTEST_ARGS)

# The whole suite, both twins, on CPython 3.14 in a Debian unstable chroot made once under
# build/py314 (tests/py314.sh; needs root and debootstrap). Not part of `test` or CI.
# PY314_MAKE=bench runs make bench there instead.
test-py314:
	sh tests/py314.sh

lint: $(STAMP)
	$(VPY) -m ruff check casty tests bench examples
	$(VPY) -m mypy

# BENCH_ARGS: --quick and/or module names (python -m bench --help).
bench: build
	$(VPY) -m bench $(BENCH_ARGS)

# Every decoder of peer bytes, 10000 examples per fuzzer (tests/test_fuzz.py, and the fuzzers of the
# fragment reassembler, watch frames and heartbeat bodies beside their features' tests), both twins,
# against a copy in build/fuzz built with bounds checking on: the in-place build is left as it is.
FUZZ_TESTS = tests/test_fuzz.py tests/test_fragments.py::test_fuzz_twins_agree_on_fragment_streams \
	tests/test_death_watch.py::test_fuzz_the_watch_handler_never_raises \
	tests/test_liveness.py::test_any_heartbeat_body_is_handled_without_raising
fuzz: $(STAMP)
	rm -rf build/fuzz/casty build/fuzz/tests
	mkdir -p build/fuzz
	cp -R casty tests setup.py pyproject.toml README.md build/fuzz/
	find build/fuzz/casty build/fuzz/tests \( -name '*.so' -o -name '*.c' -o -name '*.html' -o -name __pycache__ \) \
		-prune -exec rm -rf {} +
	cd build/fuzz && CASTY_CYTHON_CHECKS=1 CASTY_REQUIRE_EXTENSIONS=1 $(abspath $(VPY)) setup.py -q build_ext --inplace -j 2
	cd build/fuzz && PYTHONPATH=$(CURDIR)/build/fuzz CASTY_FUZZ=1 CASTY_REQUIRE_EXTENSIONS=1 CASTY_NO_EXTENSIONS=0 \
		$(abspath $(VPY)) -m pytest $(FUZZ_TESTS) -p no:cacheprovider $(PYTEST_ARGS)

# Node processes with all-to-all tells and asks while connections are killed at random:
# every tell not reported dropped must arrive once, in order (tests/soak/soak.py). Cython, then pure twins.
soak: build
	CASTY_REQUIRE_EXTENSIONS=1 CASTY_NO_EXTENSIONS=0 $(VPY) -m tests.soak.soak $(SOAK_ARGS)
	CASTY_NO_EXTENSIONS=1 $(VPY) -m tests.soak.soak $(SOAK_ARGS)

# Malicious peers against a victim node while a healthy peer asks alongside (issue 20): one
# table row per attack, JSON in build/redteam-<twin>.json (tests/redteam/redteam.py). Cython, then
# pure twins; REDTEAM_TWINS picks them, REDTEAM_ARGS passes options (--attacks a,b  --quick  --strict).
REDTEAM_TWINS ?= cython pure
redteam: build
	@for twin in $(REDTEAM_TWINS); do \
		case $$twin in \
			cython) env="CASTY_REQUIRE_EXTENSIONS=1 CASTY_NO_EXTENSIONS=0" ;; \
			pure) env="CASTY_NO_EXTENSIONS=1" ;; \
			*) echo "REDTEAM_TWINS: unknown twin '$$twin' (cython, pure)"; exit 2 ;; \
		esac; \
		env $$env $(VPY) -m tests.redteam.redteam $(REDTEAM_ARGS) || exit 1; \
	done

# Charts of bench/results/scaling.json; needs matplotlib (pip install -e '.[plot]'), else says so.
bench-plot: $(STAMP)
	$(VPY) -m bench.plot

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find casty -name '*.so' -delete -o -name '*.c' -delete -o -name '*.html' -delete -o -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(CASTY021_VENV)
