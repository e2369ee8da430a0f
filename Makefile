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
	.venv/bin/python -m pip install -q -c constraints.txt -e '.[test,lmms-deps]'
	# lmms-eval without its dependency list (it would pull a CUDA torchvision; see pyproject.toml).
	.venv/bin/python -m pip install -q -c constraints.txt --no-deps 'lmms-eval==0.7.3'
	# VLMEvalKit's packaged copy, only for the extraction conformance test (it reads one module).
	.venv/bin/python -m pip install -q -c constraints.txt --no-deps 'ms-vlmeval==0.0.20'
	touch $@

test: setup
	$(PY) -m pytest -q -rs -n 2 --dist loadfile

test-slow: setup
	$(PY) -m pytest -q -m slow

leaderboard: setup
	.venv/bin/harness leaderboard --spec leaderboards/default.yaml

# Rebuild the bundled mini-sets (deterministic) and the embedded tiny checkpoint.
data: setup
	$(PY) -m tasks.synth --out data

# As shipped: 30 minutes from scratch on 2 CPU cores with the colour curriculum (a second,
# 12-minute stage raised geoqa past 90%, leaving treatments no headroom, so it is not used).
tiny: setup
	$(PY) -m trainers.pretrain_tiny --out checkpoints/tiny --minutes 30 --pool-scale 8 --vocab-size 2048 \
		--hidden 128 --layers 4 --vision-hidden 128 --vision-layers 2 --patch-size 16 --lr 1.5e-3 \
		--eval-every 400 --eval-items 64

clean:
	rm -rf runs .pytest_cache
