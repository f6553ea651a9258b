# make test    pytest, then mypy (both must pass)
# make demo    python -m bareosproto.demo $(ARGS)
# make bench   every bench/*.py, with $(ARGS) (e.g. make bench ARGS=--quick)
# make venv    create .venv and install the project with its test extra
# make clean   remove .venv and build/test leftovers
#
# .venv is made from a Python >= 3.13 whose ssl module has TLS-PSK; see
# .ci/find-python for the search, or name one: make PYTHON=/path/to/python3.13

VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: test demo bench clean venv

test: $(STAMP)
	$(VPY) -m pytest
	$(VPY) -m mypy bareosproto

demo: $(STAMP)
	$(VPY) -m bareosproto.demo $(ARGS)

bench: $(STAMP)
	@set -e; for f in bench/*.py; do \
		echo "== $$f"; \
		$(VPY) "$$f" $(ARGS); \
	done

venv: $(STAMP)

$(VPY):
	@py=$$(PYTHON='$(PYTHON)' sh .ci/find-python) || exit 1; \
	echo "creating $(VENV) with $$py"; \
	"$$py" -m venv --clear $(VENV) || { rm -rf $(VENV); exit 1; }

$(STAMP): $(VPY) setup.cfg pyproject.toml
	$(VPY) -m pip install -e '.[test]'
	@touch $(STAMP)

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
