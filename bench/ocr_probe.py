"""Can the base see the words it fails to read? A linear probe separates the two causes of weak OCR.

    .venv/bin/python bench/ocr_probe.py --ckpt checkpoints/tiny

Fresh word images from the OCR generator (tasks/synth/ocrbench.py, the 28 words, never the test
split) are fed through the checkpoint's own processor. A multinomial logistic regression (L2, full
batch) is fit on 20 images per word and scored on 10 other images per word, on three inputs:
  pixels   the processor's pixel values (what reaches the model at its resolution): is the word
           still there after the resize? (resolution)
  random   the projected image tokens of the same architecture with fresh random weights: what an
           untrained vision tower keeps (control)
  vision   the checkpoint's projected image tokens, exactly what its language model reads: did
           pretraining teach the tower to keep the word? (vision capacity and training)
If `vision` is far above the model's OCR accuracy, the word reaches the language model and the
read-out is what is undertrained (training budget); if `vision` is near chance while `pixels` is
high, the tower lost it. Writes bench/results/ocr_probe.json.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def word_images(per_word: int, seed: int):
    from tasks.synth.ocrbench import WORDS, _render

    rng = random.Random(f"ocr-probe:{seed}")
    images, labels = [], []
    for _ in range(per_word):
        for k, word in enumerate(WORDS):
            images.append(_render([word], rng, handwritten=False)[0])
            labels.append(k)
    return images, labels


def pixel_values(ckpt: str, images):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(ckpt).image_processor(images=images, return_tensors="pt")["pixel_values"]


def image_tokens(ckpt: str, pixels, random_weights: bool = False):
    """The projected image tokens (what the language model reads), flattened per image."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    if random_weights:
        torch.manual_seed(0)
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(ckpt))
    else:
        model = AutoModelForImageTextToText.from_pretrained(ckpt)
    model.eval()
    cfg = model.config
    with torch.inference_mode():
        out = model.model.get_image_features(pixels, vision_feature_layer=cfg.vision_feature_layer,
                                             vision_feature_select_strategy=cfg.vision_feature_select_strategy)
        tokens = torch.stack(list(out.pooler_output))
    return tokens.flatten(1)


def probe_accuracy(x, y, train_mask, l2: float = 1e-3) -> float:
    """Test accuracy of an L2-regularised softmax regression fit by LBFGS on the standardised inputs."""
    import torch

    x = x.float()
    mean, std = x[train_mask].mean(0), x[train_mask].std(0) + 1e-6
    x = (x - mean) / std
    y = torch.tensor(y)
    w = torch.zeros(x.shape[1], int(y.max()) + 1, requires_grad=True)
    b = torch.zeros(int(y.max()) + 1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x[train_mask] @ w + b, y[train_mask]) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = (x[~train_mask] @ w + b).argmax(1)
    return round(100.0 * float((pred == y[~train_mask]).float().mean()), 1)


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", default="checkpoints/tiny")
    p.add_argument("--train-per-word", type=int, default=20)
    p.add_argument("--test-per-word", type=int, default=10)
    p.add_argument("--json", default="bench/results/ocr_probe.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    images, labels = word_images(args.train_per_word + args.test_per_word, seed=0)
    n_words = max(labels) + 1
    train_mask = torch.tensor([i < args.train_per_word * n_words for i in range(len(images))])
    pixels = pixel_values(args.ckpt, images)
    vision = image_tokens(args.ckpt, pixels)
    random_tokens = image_tokens(args.ckpt, pixels, random_weights=True)
    pixels = pixels.flatten(1)
    result = {"ckpt": args.ckpt, "words": n_words, "train_per_word": args.train_per_word,
              "test_per_word": args.test_per_word, "chance": round(100.0 / n_words, 1),
              "pixels": probe_accuracy(pixels, labels, train_mask),
              "random": probe_accuracy(random_tokens, labels, train_mask),
              "vision": probe_accuracy(vision, labels, train_mask)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
