"""Writes the example data files of README "Train on your own data" (run from the repo root:
`python data/examples/build.py`); the outputs are committed, this script documents how they were made.

Four 32x32 images of a coloured shape, then the same small question set in every supported layout.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
SHAPES = [("red", "circle", (220, 30, 30)), ("blue", "square", (30, 60, 220)),
          ("green", "triangle", (30, 170, 60)), ("yellow", "circle", (230, 200, 30))]


def draw(colour, shape, rgb) -> Path:
    img = Image.new("RGB", (32, 32), (250, 250, 250))
    d = ImageDraw.Draw(img)
    if shape == "circle":
        d.ellipse((6, 6, 26, 26), fill=rgb)
    elif shape == "square":
        d.rectangle((7, 7, 25, 25), fill=rgb)
    else:
        d.polygon([(16, 5), (27, 26), (5, 26)], fill=rgb)
    path = HERE / "images" / f"{colour}_{shape}.png"
    path.parent.mkdir(exist_ok=True)
    img.save(path, optimize=True)
    return path


def jsonl(path: Path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    paths = [draw(*s) for s in SHAPES]
    rel = [f"images/{p.name}" for p in paths]
    q = "What colour is the shape?"
    ans = [f"The {s} is {c}. Answer: {c}" for c, s, _ in SHAPES]
    wrong = [f"The {s} is {SHAPES[(i + 1) % 4][0]}. Answer: {SHAPES[(i + 1) % 4][0]}" for i, (c, s, _) in enumerate(SHAPES)]

    # LLaVA instruction JSON: one image per row, <image> in the first human turn; row 0 is multi-turn.
    llava = [{"id": f"shape{i}", "image": rel[i], "conversations": [
        {"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": ans[i]}]} for i in range(4)]
    llava[0]["conversations"] += [{"from": "human", "value": "And which shape is it?"},
                                  {"from": "gpt", "value": f"It is a {SHAPES[0][1]}."}]
    (HERE / "llava.json").write_text(json.dumps(llava, indent=1), encoding="utf-8")

    # LLaMA-Factory ShareGPT: conversations + images list (+ an optional system prompt).
    share = [{"conversations": [{"from": "human", "value": f"<image>{q}"}, {"from": "gpt", "value": ans[i]}],
              "images": [rel[i]]} for i in range(3)]
    share[0]["system"] = "You answer questions about pictures."
    (HERE / "sharegpt.json").write_text(json.dumps(share, indent=1), encoding="utf-8")

    # TRL conversational: messages + images; content as parts in row 0, as a string with <image> elsewhere.
    msgs = [{"messages": [{"role": "user", "content": f"<image>{q}"}, {"role": "assistant", "content": ans[i]}],
             "images": [rel[i]]} for i in range(3)]
    msgs[0]["messages"][0]["content"] = [{"type": "image"}, {"type": "text", "text": q}]
    jsonl(HERE / "messages.jsonl", msgs)

    # TRL preference: prompt / chosen / rejected + images (JSONL with paths; parquet with embedded bytes).
    pref = [{"prompt": f"<image>{q}", "chosen": ans[i], "rejected": wrong[i], "images": [rel[i]]} for i in range(4)]
    jsonl(HERE / "preference.jsonl", pref)

    from datasets import Dataset, Features, Image as DImage, Sequence, Value

    def png(p: Path) -> bytes:
        buf = io.BytesIO()
        Image.open(p).save(buf, format="PNG")
        return buf.getvalue()

    feats = Features({"prompt": Value("string"), "chosen": Value("string"), "rejected": Value("string"),
                      "images": Sequence(DImage())})
    Dataset.from_list([{**r, "images": [{"bytes": png(paths[i]), "path": None}]} for i, r in enumerate(pref)],
                      features=feats).to_parquet(str(HERE / "preference.parquet"))
    # TRL conversational as a datasets.save_to_disk folder, images embedded (decoded to PIL on load).
    conv = Dataset.from_list([{"messages": m["messages"] if i else
                               [{"role": "user", "content": f"<image>{q}"}, m["messages"][1]],
                               "images": [{"bytes": png(paths[i]), "path": None}]} for i, m in enumerate(msgs)],
                             features=Features({"messages": [{"role": Value("string"), "content": Value("string")}],
                                                "images": Sequence(DImage())}))
    conv.save_to_disk(str(HERE / "messages_disk"))

    # MMPR: a meta JSON naming datasets (root = image folder, annotation = JSONL, repeat_time).
    (HERE / "mmpr").mkdir(exist_ok=True)
    jsonl(HERE / "mmpr" / "colours.jsonl", [{"image": p.name, "question": f"<image>\n{q}", "chosen": ans[i],
                                             "rejected": wrong[i]} for i, p in enumerate(paths)])
    jsonl(HERE / "mmpr" / "shapes.jsonl", [{"image": p.name, "question": "Which shape is shown?",
                                            "chosen": f"A {SHAPES[i][1]}.", "rejected": f"A {SHAPES[(i + 1) % 3][1]}."
                                            if SHAPES[(i + 1) % 3][1] != SHAPES[i][1] else "A hexagon."}
                                           for i, p in enumerate(paths)])
    meta = {"colours": {"root": "images", "annotation": "mmpr/colours.jsonl", "repeat_time": 2, "length": 4},
            "shapes": {"root": "images", "annotation": "mmpr/shapes.jsonl", "repeat_time": 0.5, "length": 4}}
    (HERE / "mmpr_meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
