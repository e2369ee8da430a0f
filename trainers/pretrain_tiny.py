"""Pretrain the embedded default `tiny` VLM from scratch (what `make tiny` runs).

    python -m trainers.pretrain_tiny --out checkpoints/tiny --steps 24000 [--minutes 60]

A real LLaVA (CLIP vision tower + Llama) built from a config, with a byte-level BPE tokenizer that
writes numbers digit by digit, is trained on fresh generator items in every format the tasks, the
treatments and `harness compare` use (trainers/pretrain_data.py), with declared held-out cells.
Inputs go through the same HFBackend input builder as evaluation, so training and eval see
identical prompts.

The run is resumable: every `save_every` steps the model, optimizer, step and random state go to
`<out>.pretrain/` (atomically), and a new start with the same arguments continues from there.
`--minutes` stops a session early (resume later); the learning-rate schedule follows steps, so a
run cut into pieces trains the same as one that was not. When `steps` is reached the checkpoint
is written to `--out` with its manifest (config, history, held-out probes, the held-out cells).

A second stage continues a trained base (`--init-from` with every layer kept, a fresh schedule)
on another mix (`--mix`, `--task-mix`) and with its own sampled replies as selection candidates
(`--own-questions`): `make tiny` runs both stages (README "The embedded default").

Why it is shaped this way: tiny models trained briefly learn text shortcuts, not the image;
single-object colour items come first as a curriculum, option order is shuffled so text priors give
chance, and small images keep steps cheap on a CPU.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.models.checkpoints import save_for_engines


@dataclass
class PretrainConfig:
    steps: int = 24000  # total optimizer steps; the cosine schedule spans them
    minutes: float = 0.0  # stop this session after this much training (0: run to `steps`); resumable
    pause_at: int = 0  # stop this session at this step (0: never); resumable
    pool_scale: float = 16.0  # fresh items per generator, relative to the committed train split
    batch_size: int = 32
    lr: float = 1.5e-3
    warmup_steps: int = 200
    weight_decay: float = 0.01
    vocab_size: int = 2048
    image_size: int = 96
    patch_size: int = 16
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    vision_hidden: int = 128
    vision_layers: int = 2
    seed: int = 0
    eval_every: int = 1000
    eval_items: int = 48
    save_every: int = 250
    curriculum_steps: int = 500  # single-object colour batches first (steps, not time: a busy CPU must not shorten it)
    # From this step on, every selection example shows at least one right candidate (R3V's setup).
    # Before it "none right" was allowed (the gold then in no candidate), and the model learned to
    # answer past its candidates: at step 3750, on 60 geoqa selection prompts with the gold among
    # their 3 candidates, 5 replies named a candidate (3 the gold); its own answer came instead.
    select_right_from: int = 4000
    threads: int = 0  # torch threads (0: torch's default)
    # Start from a trained checkpoint instead of random weights, keeping only these LM layers (a
    # shallower base for a smaller step budget: its embeddings, vision tower and projector come
    # trained, so it recovers in a fraction of the from-scratch steps). Empty: a fresh model.
    init_from: str = ""
    keep_layers: str = ""  # comma-separated layer indices of init_from's LM, in order ("0,3")
    # The mix, as overrides of pretrain_data's FORMAT_WEIGHTS / TASK_WEIGHTS ("select=0.25,pair=0.2").
    mix: str = ""
    task_mix: str = ""
    # The base's own samples as selection candidates (a second stage, from init_from): `own_samples`
    # replies sampled once per geoqa item for `own_questions` pool items (kept in the state folder,
    # so a resumed run reuses them); `own_share` of the selection batches show them.
    own_questions: int = 0
    own_samples: int = 8
    own_share: float = 0.5


OWN_FILE = "own_samples.json"


def state_dir(out: Path) -> Path:
    return out.with_name(out.name + ".pretrain")


# --- progress probes (held-out generator items; a progress signal, not a result) ---------------
def probe(backend, held: dict) -> dict[str, float]:
    """Greedy accuracy per task, selection (n = 3) parse rate and accuracy, pairwise agreement."""
    from harness.core.types import GenConfig
    from harness.judge.pipeline import parse_verdict
    from harness.stats.selection import read_selection

    def generate(examples, max_new_tokens):
        outs = backend.generate_images([e.text for e in examples], [[e.image] for e in examples],
                                       GenConfig(max_new_tokens=max_new_tokens))
        return [o[0] for o in outs]

    scores: dict[str, float] = {}
    for name, rows in held["task"].items():
        task = rows[0][0].task
        outs = generate([ex for _, ex in rows], task.max_new_tokens)
        scores[name] = sum(task.score(task.extract(o, s.item), s.item) for o, (s, _) in zip(outs, rows)) / len(rows)
    for kind in ("select", "select_own"):  # generator candidates; the base's own samples (second stage)
        rows = held.get(kind)
        if not rows:
            continue
        outs = generate([ex for _, ex in rows], 48)
        picks = [read_selection(s.task, o, s.item) for o, (s, _) in zip(outs, rows)]
        scores[f"{kind}_parsed"] = sum(p is not None for p in picks) / len(rows)
        scores[f"{kind}_acc"] = sum(s.task.score(p, s.item) for p, (s, _) in zip(picks, rows)) / len(rows)
    rows = held["pair"]
    outs = generate([ex for _, ex in rows], 16)
    scores["pair_agree"] = sum(parse_verdict(o) == gold for o, (gold, _) in zip(outs, rows)) / len(rows)
    return {k: round(v, 4) for k, v in scores.items()}


def held_probes(sources: dict, n: int, seed: int) -> dict:
    """Probe items taken out of the pool before training: per task, selection at n = 3, pairs."""
    from trainers.pretrain_data import TASKS, _pair, _select, _task

    rng = random.Random(f"probe:{seed}")
    held: dict = {"task": {}, "select": [], "pair": []}
    for name in TASKS:
        taken, sources[name] = sources[name][-n:], sources[name][:-n]
        held["task"][name] = [(s, _task(s, name, rng)) for s in taken]
        if name == "geoqa":
            held["select"] = [(s, ex) for s in taken if (ex := _select(s, name, rng, 3)) is not None]
        for s in taken[: max(1, n // 4)]:
            ex = _pair(s, name, rng)
            if ex is not None and not ex.target.startswith("Tie"):
                held["pair"].append(("1" if ex.target.startswith("Answer1") else "2", ex))
    return held


# --- state --------------------------------------------------------------------------------------
def save_state(sdir: Path, model, tokenizer_dir: Path, opt, step: int, rng: random.Random, history: list,
               seconds: float) -> None:
    """Model, optimizer and counters, written beside and then swapped in (a kill leaves the last good one)."""
    import torch

    tmp = sdir.with_name(sdir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(tokenizer_dir, tmp / "model", ignore=shutil.ignore_patterns("model.safetensors"))
    save_for_engines(model, None, tmp / "model")  # the weight layout vLLM and `transformers serve` read
    torch.save({"optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state()}, tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, "seconds": round(seconds, 1), "history": history,
                                                "rng": repr(rng.getstate())}) + "\n")
    if (sdir / OWN_FILE).is_file():
        shutil.copy2(sdir / OWN_FILE, tmp / OWN_FILE)
    old = sdir.with_name(sdir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if sdir.exists():
        os.replace(sdir, old)
    os.replace(tmp, sdir)
    shutil.rmtree(old, ignore_errors=True)


def pruned_copy(src: Path, dst: Path, keep: list[int]) -> None:
    """`src` (a LLaVA checkpoint folder) with only the LM layers `keep`, renumbered 0..k-1, into `dst`."""
    import re

    from safetensors.torch import load_file, save_file

    from harness.errors import HarnessError

    config = json.loads((src / "config.json").read_text())
    n = config["text_config"]["num_hidden_layers"]
    if not keep or len(set(keep)) != len(keep) or not all(0 <= k < n for k in keep):
        raise HarnessError(f"--keep-layers {','.join(map(str, keep))}: give distinct layer indices in 0..{n - 1}")
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors", "manifest.json"))
    layer = re.compile(r"^(language_model\.model\.layers\.)(\d+)(\..*)$")
    weights = {}
    for name, tensor in load_file(src / "model.safetensors").items():
        m = layer.match(name)
        if m is None:
            weights[name] = tensor
        elif int(m.group(2)) in keep:
            weights[f"{m.group(1)}{keep.index(int(m.group(2)))}{m.group(3)}"] = tensor
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    config["text_config"]["num_hidden_layers"] = len(keep)
    (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def _fresh_model(sdir: Path, sources: dict, cfg: PretrainConfig) -> None:
    if cfg.init_from:
        keep = [int(k) for k in cfg.keep_layers.split(",") if k.strip()]
        pruned_copy(Path(cfg.init_from), sdir / "model", keep)
        return
    from trainers.pretrain_data import TASKS
    from trainers.tiny_model import build_tiny, build_tokenizer

    texts = [t for name in TASKS for s in sources[name] for t in (s.prompt, *s.right, *s.wrong)]
    texts += [s.item.question for name in TASKS for s in sources[name][:200]]
    tokenizer = build_tokenizer(texts, vocab_size=cfg.vocab_size)
    build_tiny("llava", tokenizer, sdir / "model", image_size=cfg.image_size, patch_size=cfg.patch_size,
               hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads,
               vision_hidden=cfg.vision_hidden, vision_layers=cfg.vision_layers, seed=cfg.seed)


def own_candidates(backend, sdir: Path, sources: dict, held: dict, cfg: PretrainConfig) -> None:
    """Sample (once; a resumed run reads them back) the base's own replies for the first
    `own_questions` geoqa pool items and the probe items, attach them, and add the own-candidate
    selection probe (n = 3, one right candidate at least, as R3V and `harness compare` have)."""
    from trainers.pretrain_data import _select, attach_own, sample_own

    pool, probe_rows = sources["geoqa"][: cfg.own_questions], [s for s, _ in held["task"]["geoqa"]]
    path = sdir / OWN_FILE
    if path.is_file():
        samples = json.loads(path.read_text())
    else:
        t0 = time.time()
        backend.model.eval()
        report = lambda done, total: print(f"  own samples: {done}/{total} items ({time.time() - t0:.0f}s)", flush=True)  # noqa: E731
        samples = sample_own(backend, pool + probe_rows, cfg.own_samples, cfg.seed, report=report)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(samples) + "\n")
        os.replace(tmp, path)
    attach_own(pool + probe_rows, samples)
    rng = random.Random(f"own-probe:{cfg.seed}")
    held["select_own"] = [(s, ex) for s in probe_rows if (ex := _select(s, "geoqa", rng, 3, True, True)) is not None]
    right = sum(bool(s.own_right) for s in pool)
    print(f"own samples: {len(pool)} items, {right} with a right sample", flush=True)


def _preload() -> None:
    """Import now what later steps import lazily, so an hours-long run keeps the code it started with
    even if the checkout changes under it."""
    import importlib

    for module in ("harness.core.types", "harness.judge.pipeline", "harness.stats.selection",
                   "trainers.self_train", "trainers.self_critique", "tasks.geoqa", "tasks.synth.geoqa",
                   "tasks.synth.ocrbench"):
        importlib.import_module(module)


def train(out: Path, cfg: PretrainConfig) -> dict | None:
    """Train (or continue) to cfg.steps; returns the manifest when finished, None when stopped early."""
    import ast

    import torch

    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint
    from trainers.pretrain_data import FORMAT_WEIGHTS, HELD_OUT, TASK_WEIGHTS, draw_batch, load_sources, parse_weights

    format_weights = parse_weights(cfg.mix, FORMAT_WEIGHTS, "mix")  # a bad flag fails before hours of work
    task_weights = parse_weights(cfg.task_mix, TASK_WEIGHTS, "task-mix")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    _preload()
    sdir = state_dir(out)
    old = sdir.with_name(sdir.name + ".old")
    if not sdir.exists() and (old / "state.json").is_file():  # killed between save_state's two renames
        os.replace(old, sdir)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        sources = load_sources(Path(tmp), cfg.pool_scale, cfg.seed)
        held = held_probes(sources, cfg.eval_items, cfg.seed)
        print(f"pool: {', '.join(f'{k}={len(v)}' for k, v in sources.items())} ({time.time() - t0:.0f}s)", flush=True)
        state: dict = {"step": 0, "seconds": 0.0, "history": []}
        rng = random.Random(cfg.seed)
        if (sdir / "state.json").is_file():
            state = json.loads((sdir / "state.json").read_text())
            rng.setstate(ast.literal_eval(state["rng"]))
            print(f"resuming at step {state['step']} from {sdir}", flush=True)
        else:
            torch.manual_seed(cfg.seed)
            sdir.mkdir(parents=True, exist_ok=True)
            _fresh_model(sdir, sources, cfg)
        backend = HFBackend(resolve_checkpoint(str(sdir / "model")), device="cpu", dtype="float32")
        model = backend.model
        n_params = sum(p.numel() for p in model.parameters())
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if (sdir / "optimizer.pt").is_file():
            saved = torch.load(sdir / "optimizer.pt", weights_only=False)
            opt.load_state_dict(saved["optimizer"])
            torch.set_rng_state(saved["torch_rng"])
        step, history, spent = state["step"], state["history"], state["seconds"]
        print(f"model: {n_params / 1e6:.2f}M parameters; step {step} of {cfg.steps}", flush=True)
        if cfg.own_questions:
            own_candidates(backend, sdir, sources, held, cfg)
        if step == 0 and cfg.init_from:  # where the second stage starts, on its own probe items
            model.eval()
            history.append({"step": 0, **probe(backend, held)})
            print(f"  probes: {json.dumps(history[-1])}", flush=True)
        start, losses = time.time(), []
        while step < cfg.steps:
            if (cfg.minutes and time.time() - start > cfg.minutes * 60) or (cfg.pause_at and step == cfg.pause_at):
                save_state(sdir, model, sdir / "model", opt, step, rng, history, spent + time.time() - start)
                print(f"stopped at step {step}; run again to continue", flush=True)
                return None
            lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
            for g in opt.param_groups:
                g["lr"] = lr
            batch = draw_batch(sources, rng, cfg.batch_size, curriculum=step < cfg.curriculum_steps,
                               select_needs_right=step >= cfg.select_right_from, format_weights=format_weights,
                               task_weights=task_weights, own_share=cfg.own_share if cfg.own_questions else 0.0)
            model.train()
            inputs = backend.batch_inputs([e.text for e in batch], [[e.image] for e in batch],
                                          targets=[e.target for e in batch])
            loss = model(**inputs).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append((batch[0].format, loss.item()))
            step += 1
            if step % 50 == 0:
                by = {}
                for f, v in losses[-200:]:
                    by.setdefault(f, []).append(v)
                parts = " ".join(f"{f} {sum(v) / len(v):.3f}" for f, v in sorted(by.items()))
                print(f"step {step} lr {lr:.2e} {time.time() - start:.0f}s loss: {parts}", flush=True)
            if step % cfg.eval_every == 0 or step == cfg.steps:
                model.eval()
                history.append({"step": step, **probe(backend, held)})
                print(f"  probes: {json.dumps(history[-1])}", flush=True)
            if step % cfg.save_every == 0 or step == cfg.steps:
                save_state(sdir, model, sdir / "model", opt, step, rng, history, spent + time.time() - start)
        spent += time.time() - start
    manifest = {
        "treatment": "pretrain_tiny",
        "config": asdict(cfg),
        "steps": step,
        "train_seconds": round(spent, 1),
        "probes": history[-1] if history else {},
        "history": history,
        "parameters": n_params,
        "formats": format_weights,
        "task_weights": task_weights,
        "held_out": HELD_OUT,
        "command": "make tiny",
    }
    if cfg.init_from:  # the deeper run this one was cut from: its own record, so the history is whole
        source = Path(cfg.init_from) / "manifest.json"
        if source.is_file():
            manifest["init"] = {k: v for k, v in json.loads(source.read_text()).items() if k != "init"}

    staged = out.with_name(out.name + ".new")
    shutil.rmtree(staged, ignore_errors=True)
    shutil.copytree(sdir / "model", staged)
    (staged / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(staged, out)
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="checkpoints/tiny")
    for field, default in asdict(PretrainConfig()).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(default), default=default)
    args = parser.parse_args()
    cfg = PretrainConfig(**{f: getattr(args, f) for f in asdict(PretrainConfig())})
    from harness.errors import HarnessError

    try:
        manifest = train(Path(args.out), cfg)
    except HarnessError as e:  # a bad flag: one line, no traceback, nothing written
        raise SystemExit(f"error: {e}") from None
    if manifest:
        print(json.dumps({k: manifest[k] for k in ("steps", "train_seconds", "probes")}, indent=2))


if __name__ == "__main__":
    main()
