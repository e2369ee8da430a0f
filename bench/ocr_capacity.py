"""Can this architecture learn to read at all? OCR items alone, every weight trained (issue 26's REMGCL row).

The board's OCR rows (`sft_ocr`, `remgcl`: LoRA on 600 OCR train items plus replay) read 2-4%, even of
their own train items after 4x the epochs. This separates the candidate causes:
- the LoRA adapter and the replay share (init tiny, all weights, OCR items only);
- tiny's pretraining (init fresh: the same architecture from random weights, tiny's tokenizer);
- the image grid (fresh with --patch-size 8: 144 image tokens instead of 36; not measured yet);
- what LoRA's all-linear leaves fixed (init tiny, --freeze patch_embedding: the vision tower's first layer is a
  convolution, not a linear layer, so no LoRA adapts it).
Items are fresh generator items (tasks/synth/ocrbench.py, another seed than the bundled splits; the
held-out words never appear), so nothing here sees a test or held-out item. Score with the harness:

    python bench/ocr_capacity.py --init tiny --steps 2000 --out runs/ocr_capacity/tiny_full
    harness eval --ckpt runs/ocr_capacity/tiny_full --tasks ocrbench --data-dir data/heldout

`--digits RUN_DIR ...` scores runs' digit strings digit by digit (the share of digits right at their
position; chance is 10%), which moves before whole strings do, with each later run's paired difference
from the first (bootstrap CI over the items):

    python bench/ocr_capacity.py --digits runs/causes/runs_ocr/tiny runs/causes/runs_ocr/ocr_all_2000 --data-dir data/heldout

`--write-data DIR` writes the same items as an OCR train split (DIR/ocrbench/OCRBench_train.json) and
stops, so the treatments (`harness train sft|remgcl --data-dir DIR`) can train on them too.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import random
import shutil
import tempfile
import time
from pathlib import Path


def write_items(root: Path, n: int, seed: int) -> None:
    """`n` fresh generator OCR items (another seed than every bundled split) without the held-out words."""
    from tasks.synth import ocrbench as synth_ocr
    from trainers.pretrain_data import HELD_OUT_WORDS

    synth_ocr.build(root, "train", n, 5000 + seed)
    path = root / "ocrbench" / "OCRBench_train.json"
    rows = json.loads(path.read_text(encoding="utf-8"))
    kept = [r for r in rows if not (isinstance(r["answers"], str) and r["answers"].upper() in HELD_OUT_WORDS)]
    path.write_text(json.dumps(kept), encoding="utf-8")


@functools.lru_cache(maxsize=None)
def _test_items(data_dir: Path) -> dict:
    from harness.core.task import get_task

    return {it.id: it for it in get_task("ocrbench").load(data_dir, "test")}


def digit_accuracy(run: Path, data_dir: Path) -> dict[str, float]:
    """Per digit-string item of a run: the share of its gold digits the reply has at the same position."""
    items = _test_items(data_dir)  # read once for all the runs compared
    out = {}
    for line in (run / "ocrbench" / "samples.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        item = items[row["id"]]
        if item.category == "Digit String Recognition":
            gold, reply = item.target[0].strip(), row["output"].strip()
            out[row["id"]] = sum(g == r for g, r in zip(gold, reply)) / len(gold)
    return out


def report_digits(runs: list[Path], data_dir: Path) -> None:
    import numpy as np
    from scipy.stats import bootstrap

    first = digit_accuracy(runs[0], data_dir)
    ids = sorted(first)
    print(f"{runs[0]}: digits right at their position {100 * np.mean([first[i] for i in ids]):.1f}% ({len(ids)} items)")
    for run in runs[1:]:
        other = digit_accuracy(run, data_dir)
        if sorted(other) != ids:
            raise SystemExit(f"{run}: not the same digit-string items as {runs[0]}; evaluate both on one --data-dir")
        diff = np.array([other[i] - first[i] for i in ids])
        ci = bootstrap((diff,), np.mean, n_resamples=10000, random_state=0).confidence_interval
        print(f"{run}: {100 * np.mean([other[i] for i in ids]):.1f}%, vs the first {100 * diff.mean():+.1f} "
              f"[{100 * ci.low:+.1f}, {100 * ci.high:+.1f}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init", choices=("tiny", "fresh"))
    parser.add_argument("--out")
    parser.add_argument("--write-data", help="write the items as DIR/ocrbench/OCRBench_train.json and stop")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--items", type=int, default=4800, help="fresh OCR train items to draw batches from")
    parser.add_argument("--patch-size", type=int, default=16, help="fresh only (tiny: 16)")
    parser.add_argument("--hidden", type=int, default=128, help="fresh only: LM and vision width")
    parser.add_argument("--freeze", default="", help="comma-separated parts of parameter names to keep frozen "
                                                     "(e.g. patch_embedding: what LoRA's all-linear cannot adapt)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--digits", nargs="+", metavar="RUN_DIR", help="digit-by-digit accuracy of these runs, then stop")
    parser.add_argument("--data-dir", default="data/heldout", help="with --digits: the data the runs answered")
    args = parser.parse_args()
    if args.digits:
        report_digits([Path(r) for r in args.digits], Path(args.data_dir))
        return
    if args.write_data:
        write_items(Path(args.write_data), args.items, args.seed)
        print(f"wrote {args.write_data}/ocrbench/OCRBench_train.json; train with --data-dir {args.write_data}")
        return
    if not (args.init and args.out):
        parser.error("give --init and --out (or --write-data DIR)")

    import torch

    from harness.core.images import open_image
    from harness.core.task import get_task
    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint, save_for_engines, tiny_path

    out = Path(args.out)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_items(work, args.items, args.seed)
        task = get_task("ocrbench")
        items = task.load(work, "train")
        rows = [(task.prompt(it), open_image(it.images[0]), task.target_text(it)) for it in items]
        model_dir = work / "model"
        if args.init == "tiny":
            shutil.copytree(tiny_path(), model_dir, ignore=shutil.ignore_patterns("manifest.json"))
        else:
            from transformers import AutoTokenizer

            from trainers.tiny_model import build_tiny

            build_tiny("llava", AutoTokenizer.from_pretrained(str(tiny_path())), model_dir, image_size=96,
                       patch_size=args.patch_size, hidden=args.hidden, vision_hidden=args.hidden, seed=args.seed)
        backend = HFBackend(resolve_checkpoint(str(model_dir)), device="cpu", dtype="float32")
        model = backend.model
        frozen = [part for part in args.freeze.split(",") if part.strip()]
        for name, param in model.named_parameters():
            param.requires_grad = not any(part in name for part in frozen)
        trained = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trained, lr=args.lr, weight_decay=0.01)
        print(f"{len(rows)} OCR items; {sum(p.numel() for p in trained) / 1e6:.2f}M of "
              f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters trained", flush=True)
        start, losses, history = time.time(), [], []
        for step in range(args.steps):
            lr = args.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
            for g in opt.param_groups:
                g["lr"] = lr
            batch = rng.sample(rows, args.batch_size)
            model.train()
            inputs = backend.batch_inputs([b[0] for b in batch], [[b[1]] for b in batch], targets=[b[2] for b in batch])
            loss = model(**inputs).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            opt.step()
            losses.append(loss.item())
            if (step + 1) % 100 == 0:
                history.append([step + 1, round(sum(losses[-100:]) / 100, 4)])
                print(f"step {step + 1} loss {history[-1][1]:.3f} {time.time() - start:.0f}s", flush=True)
        model.eval()
        staged = out.with_name(out.name + ".new")
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(model_dir, staged, ignore=shutil.ignore_patterns("model.safetensors"))
        save_for_engines(model, None, staged)
        (staged / "manifest.json").write_text(json.dumps({
            "treatment": "bench/ocr_capacity.py", "config": vars(args), "items": len(rows),
            "train_seconds": round(time.time() - start, 1), "loss_history": history,
        }, indent=2) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        staged.rename(out)
    print(f"wrote {out}; score it: harness eval --ckpt {out} --tasks ocrbench --data-dir data/heldout", flush=True)


if __name__ == "__main__":
    main()
