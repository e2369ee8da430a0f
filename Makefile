# The first two commands on a fresh clone: `make leaderboard` and `make test`.
# Both set up .venv/ first (CPU torch pinned by constraints.txt, never replaced).
PY := .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: setup test test-slow leaderboard tiny data clean

setup: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml constraints.txt
	python3 -m venv .venv
	.venv/bin/python -m pip install -q --upgrade pip
	# torch first, from the local CPU wheel; the constraints file keeps every later install on it.
	.venv/bin/python -m pip install -q -c constraints.txt torch==2.13.0
	.venv/bin/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile

test-slow: setup
	$(PY) -m pytest -q -m slow

leaderboard: setup
	.venv/bin/harness leaderboard --spec leaderboards/default.yaml

# Rebuild the bundled mini-sets (deterministic) and the embedded tiny checkpoint.
data: setup
	$(PY) -m tasks.synth --out data

tiny: setup
	$(PY) -m trainers.pretrain_tiny --data data --out checkpoints/tiny

clean:
	rm -rf runs .pytest_cache
