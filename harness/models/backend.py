"""Run a Hugging Face VLM checkpoint: batched generation and likelihoods of given replies.

    backend = HFBackend(resolve_checkpoint("tiny"))
    outputs = backend.generate([Prompt("What is shown?", (Path("cat.png"),))], GenConfig())

Inputs are built from the checkpoint's own chat template, tokenizer and image processor (its PIL
variant, so preprocessing is the same with or without torchvision). The image placeholder of
each family is expanded to the number of vision tokens the model produces, as the family's
processor does; Qwen2-VL's processor is not used because transformers requires a torchvision
video processor for it. Sequences are LEFT padded so batched generation continues every row
right after its own prompt.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from harness.models.checkpoints import CheckpointRef
from harness.errors import HarnessError
from harness.core.images import open_image
from harness.models.shared_prefix import supports_shared_prefix
from harness.core.types import GenConfig, Prompt

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

IGNORE_INDEX = -100  # label value the loss skips (prompt, image and padding tokens)
QWEN_FAMILIES = ("qwen2_vl", "qwen2_5_vl")
LLAVA_FAMILIES = ("llava",)
_REPLY_MARK = "\u2063REPLY\u2063"  # an unlikely string, to find where a template puts the reply


@dataclass
class _Encoded:
    """One example before collation: token ids, reply labels and its images' features."""

    input_ids: list[int]
    labels: list[int]
    pixel_values: Any = None  # tensor, rows to concatenate along dim 0
    image_grid_thw: Any = None  # Qwen2-VL only


class HFBackend:
    """A loaded checkpoint plus its tokenizer and image processor."""

    def __init__(self, ref: CheckpointRef, device: str | None = None, dtype: str | None = None,
                 trust_remote_code: bool = False, model: Any = None):
        """`model`: an already loaded (in-memory, possibly PEFT-wrapped) model to run instead of
        loading ref's weights; ref then only supplies the tokenizer, processor and family."""
        import torch
        from transformers.utils import logging as hf_logging

        # Deprecation and "fast processor" notices confuse users of the CLI; errors still show.
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        self.ref = ref
        self.name = ref.name
        self.content_hash = ref.content_hash
        if model is not None:
            param = next(model.parameters())
            device, dtype = str(param.device), param.dtype
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype is None:
            cuda_bf16 = self.device.startswith("cuda") and torch.cuda.is_bf16_supported()
            self.torch_dtype = torch.bfloat16 if cuda_bf16 else torch.float32
        else:
            self.torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.dtype = str(self.torch_dtype).removeprefix("torch.")
        self.trust_remote_code = trust_remote_code or ref.model_type == "internvl_chat"
        self.model = self._load_model() if model is None else model.eval()
        self.model_family = str(self.model.config.model_type)
        # N samples per prompt share the prompt's keys and values (harness/models/shared_prefix.py).
        self.shared_prefix = supports_shared_prefix(self.model)
        self._load_processors()

    # ---- loading -------------------------------------------------------------------------
    def _load_model(self):
        from transformers import AutoModelForImageTextToText

        model_dir = self.ref.base_path if self.ref.kind == "adapter" else self.ref.path
        try:
            model = AutoModelForImageTextToText.from_pretrained(
                model_dir, dtype=self.torch_dtype, use_safetensors=True,
                trust_remote_code=self.trust_remote_code,
            )
        except Exception as e:  # transformers raises many types for broken files
            raise HarnessError(f"cannot load checkpoint {model_dir}: {_one_line(e)}; re-save or re-download it") from None
        if self.ref.kind == "adapter":
            from peft import PeftModel

            try:
                # Merged once at load: generation then runs at the base model's speed.
                model = PeftModel.from_pretrained(model, self.ref.path).merge_and_unload()
            except Exception as e:
                raise HarnessError(f"cannot load adapter {self.ref.path}: {_one_line(e)}; re-save it") from None
        return model.to(self.device).eval()

    def _load_processors(self) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer

        # An adapter folder may carry its own tokenizer (e.g. with added tokens); else the base's.
        tok_dir = self.ref.path
        if self.ref.kind == "adapter" and not (self.ref.path / "tokenizer_config.json").is_file():
            tok_dir = self.ref.base_path
        model_dir = self.ref.base_path if self.ref.kind == "adapter" else self.ref.path
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(tok_dir, trust_remote_code=self.trust_remote_code)
            self.image_processor = AutoImageProcessor.from_pretrained(
                model_dir, backend="pil", trust_remote_code=self.trust_remote_code
            )
        except Exception as e:
            raise HarnessError(f"cannot load tokenizer/image processor of {tok_dir}: {_one_line(e)}") from None
        if self.model_family not in QWEN_FAMILIES + LLAVA_FAMILIES:
            raise HarnessError(
                f"{self.ref.path}: model family {self.model_family!r} is not supported yet "
                f"(supported: {', '.join(QWEN_FAMILIES + LLAVA_FAMILIES)})"
            )
        if self.tokenizer.chat_template is None:
            raise HarnessError(f"{tok_dir} has no chat template; save the tokenizer with one")
        config = self.model.config
        image_token_id = getattr(config, "image_token_id", None) or getattr(config, "image_token_index", None)
        self.image_token_id = int(image_token_id)
        self.image_token = self.tokenizer.convert_ids_to_tokens(self.image_token_id)
        self.pad_token_id = self.tokenizer.pad_token_id
        if self.pad_token_id is None:
            self.pad_token_id = self.model.generation_config.pad_token_id or self.tokenizer.eos_token_id
        self._reply_prefix, self._reply_suffix = self._reply_format()

    @property
    def reply_prefix(self) -> str:
        """What the chat template puts before an assistant reply (after the generation prompt)."""
        return self._reply_prefix

    @property
    def reply_suffix(self) -> str:
        """The end-of-turn text the chat template puts after an assistant reply."""
        return self._reply_suffix

    def generation_config(self, gen: GenConfig, n: int = 1):
        """The transformers GenerationConfig `generate` uses for `gen` and n samples."""
        return self._generation_config(gen, n)

    # Input building for training code (trainers/data.py): the same steps evaluation uses.
    def encode_images(self, images: Sequence["Image"]) -> tuple[Any, Any, list[int]]:
        return self._encode_images(images)

    def encode(self, text: str, images: Sequence["Image"], target: str | None,
               image_feats: tuple[Any, Any, list[int]] | None = None) -> _Encoded:
        return self._encode(text, images, target, image_feats)

    def collate(self, examples: Sequence[_Encoded], with_labels: bool) -> dict[str, Any]:
        return self._collate(examples, with_labels)

    def _reply_format(self) -> tuple[str, str]:
        """The text the chat template puts before and after an assistant reply (after the
        generation prompt), found once by rendering a marker reply."""
        user = [{"role": "user", "content": [{"type": "text", "text": "x"}]}]
        prompt = self.tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = self.tokenizer.apply_chat_template(
            user + [{"role": "assistant", "content": [{"type": "text", "text": _REPLY_MARK}]}], tokenize=False
        )
        if not full.startswith(prompt) or _REPLY_MARK not in full:
            return "", self.tokenizer.eos_token or ""
        prefix, suffix = full[len(prompt):].split(_REPLY_MARK, 1)
        # Trailing newlines after the end-of-turn token are not part of what the model must say.
        return prefix, suffix.rstrip()

    # ---- inputs ----------------------------------------------------------------------------
    def _prompt_ids(self, text: str, n_images: int) -> list[int]:
        limit = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        if limit and len(text) > 64 * limit:  # never tokenize a 10 MB line: it cannot fit the context anyway
            raise HarnessError(f"a prompt of {len(text)} characters cannot fit the model's context of {limit} "
                               "tokens; shorten the question")
        content = [{"type": "image"}] * n_images + [{"type": "text", "text": text}]
        rendered = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        # Templates that omit BOS rely on the tokenizer adding it (as the family's processor does).
        bos = self.tokenizer.bos_token
        add_special = bool(bos) and not rendered.startswith(bos)
        return self.tokenizer(rendered, add_special_tokens=add_special)["input_ids"]

    def _encode_images(self, images: Sequence["Image"]) -> tuple[Any, Any, list[int]]:
        """Pixel features of one example's images and the vision-token count of each image."""
        if not images:
            return None, None, []
        feats = self.image_processor(images=list(images), return_tensors="pt")
        pixel_values = feats["pixel_values"]
        if self.model_family in QWEN_FAMILIES:
            grid = feats["image_grid_thw"]
            merge = self.image_processor.merge_size
            return pixel_values, grid, [int(g.prod()) // merge**2 for g in grid]
        # LLaVA: one token per patch, plus CLS for a CLIP tower unless "default" drops it.
        config = self.model.config
        patch = config.vision_config.patch_size
        h, w = pixel_values.shape[-2:]
        count = (h // patch) * (w // patch)
        has_cls = config.vision_config.model_type == "clip_vision_model"
        if has_cls and config.vision_feature_select_strategy == "full":
            count += 1
        return pixel_values, None, [count] * len(images)

    def _encode(self, text: str, images: Sequence["Image"], target: str | None,
                image_feats: tuple[Any, Any, list[int]] | None = None) -> _Encoded:
        pixel_values, grid, counts = image_feats or self._encode_images(images)
        ids: list[int] = []
        image_index = 0
        for tok in self._prompt_ids(text, len(counts)):
            if tok == self.image_token_id:
                ids.extend([tok] * counts[image_index])
                image_index += 1
            else:
                ids.append(tok)
        if image_index != len(counts):
            raise HarnessError(
                f"{self.ref.path}: chat template placed {image_index} image tokens for {len(counts)} images"
            )
        limit = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        if limit and len(ids) > limit:  # image tokens included: what the pre-flight text count cannot see
            raise HarnessError(f"a prompt of {len(ids)} tokens (images included) exceeds the model's context of "
                               f"{limit} tokens; shorten the question or use smaller images")
        labels = [IGNORE_INDEX] * len(ids)
        if target is not None:
            reply = self._reply_prefix + target + self._reply_suffix
            reply_ids = self.tokenizer(reply, add_special_tokens=False)["input_ids"]
            ids += reply_ids
            labels += reply_ids
        return _Encoded(ids, labels, pixel_values, grid)

    def _collate(self, examples: Sequence[_Encoded], with_labels: bool) -> dict[str, Any]:
        import torch

        width = max(len(e.input_ids) for e in examples)
        input_ids = torch.full((len(examples), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        for row, e in enumerate(examples):
            n = len(e.input_ids)
            input_ids[row, width - n:] = torch.tensor(e.input_ids)  # left padding
            attention_mask[row, width - n:] = 1
            labels[row, width - n:] = torch.tensor(e.labels)
        batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        pixels = [e.pixel_values for e in examples if e.pixel_values is not None]
        if pixels:
            batch["pixel_values"] = torch.cat(pixels).to(self.torch_dtype)
        if self.model_family in QWEN_FAMILIES:
            grids = [e.image_grid_thw for e in examples if e.image_grid_thw is not None]
            if grids:
                batch["image_grid_thw"] = torch.cat(grids)
            # M-RoPE needs to know which positions are image tokens (1) vs text (0).
            batch["mm_token_type_ids"] = (input_ids == self.image_token_id).long()
        if with_labels:
            batch["labels"] = labels
        return {k: v.to(self.device) for k, v in batch.items()}

    def batch_inputs(self, texts: Sequence[str], images: Sequence[Sequence["Image"]],
                     targets: Sequence[str] | None = None) -> dict[str, Any]:
        """Model inputs for user turns `texts` with `images` (PIL, per example), left padded.

        With `targets`, each reply (plus the template's end-of-turn token) is appended and
        `labels` holds the reply token ids, -100 elsewhere (prompt, image tokens, padding).
        """
        if len(texts) != len(images) or (targets is not None and len(targets) != len(texts)):
            raise ValueError("texts, images and targets must have the same length")
        examples = [
            self._encode(text, imgs, None if targets is None else targets[i])
            for i, (text, imgs) in enumerate(zip(texts, images))
        ]
        return self._collate(examples, with_labels=targets is not None)

    # ---- inference -------------------------------------------------------------------------
    def _open(self, prompt: Prompt, blind: bool) -> list["Image"]:
        return [open_image(ref, blank=blind) for ref in prompt.images]

    def generate(self, prompts: Sequence[Prompt], gen: GenConfig, n: int = 1,
                 blind: bool = False, seeds: Sequence[int] | None = None) -> list[list[str]]:
        """`n` outputs per prompt, from one batched `model.generate` call.

        Greedy when gen.temperature == 0 (then the n outputs are copies). With `seeds` (one per
        output row, grouped by prompt) each row draws from its own counter-based stream, so a
        sampled output does not depend on the batch it ran in; without, sampling is seeded with
        gen.seed before the call (reproducible for the same batch composition).
        """
        return self.generate_images([p.text for p in prompts], [self._open(p, blind) for p in prompts], gen, n,
                                    seeds=seeds)

    def check_prompts(self, prompts: Sequence[tuple[str, Prompt]], max_new_tokens: int) -> None:
        """Refuse, before generating anything, a prompt that cannot fit the model's context."""
        limit = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        if not limit:
            return
        for item_id, prompt in prompts:
            # A token spans at most a few dozen characters: far longer text is refused untokenized
            # (tokenizing a 10 MB line costs gigabytes).
            n = limit * 64 if len(prompt.text) > limit * 64 else len(self._prompt_ids(prompt.text, len(prompt.images)))
            if n + max_new_tokens > limit:
                raise HarnessError(f"item {item_id}: prompt of {'over ' if n == limit * 64 else ''}{n} tokens plus "
                                   f"{max_new_tokens} new ones exceeds the model's context of {limit} tokens; "
                                   "shorten the question or lower --max-new-tokens")

    def generate_images(self, texts: Sequence[str], images: Sequence[Sequence["Image"]], gen: GenConfig,
                        n: int = 1, seeds: Sequence[int] | None = None) -> list[list[str]]:
        """`generate` for already opened images (training loops that keep images in memory)."""
        import torch

        if not texts:
            return []
        inputs = self.batch_inputs(texts, images)
        if gen.greedy or n == 1:
            gen_config = self._generation_config(gen, n)
            sampler = self._row_sampler(gen, seeds)
            if sampler:  # greedy mode picks the token the per-row sampler drew
                gen_config = self._generation_config(GenConfig(max_new_tokens=gen.budget), 1)
            torch.manual_seed(gen.seed)
            with torch.inference_mode():
                out = self.model.generate(**inputs, generation_config=gen_config, logits_processor=sampler)
        else:
            out = self.generate_expanded(inputs, gen, n, seeds=seeds)
        new_tokens = out[:, inputs["input_ids"].shape[1]:]
        outs = [t.strip() for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
        per_prompt = 1 if gen.greedy else n
        grouped = [outs[i * per_prompt:(i + 1) * per_prompt] for i in range(len(texts))]
        return [g * n if gen.greedy else g for g in grouped]

    @staticmethod
    def _row_sampler(gen: GenConfig, seeds: Sequence[int] | None) -> list:
        if gen.greedy or seeds is None:
            return []
        from harness.models.shared_prefix import sampling_processors

        return sampling_processors(gen.temperature, gen.top_k, gen.top_p, seeds=list(seeds))

    def generate_expanded(self, inputs: dict[str, Any], gen: GenConfig, n: int,
                          seeds: Sequence[int] | None = None) -> "torch.Tensor":
        """`n` continuations per row of `inputs`, encoding each prompt and its images ONCE.

        `num_return_sequences` copies every prompt n times before the first forward pass, so the
        prompt's prefill runs on all n copies (transformers 5 encodes the images before copying).
        Here the prompt minus its last token is prefilled once (a 1-token `generate`, which
        builds each family's positions and image features itself) and `generate` continues from
        that cache (the prefix-caching use Hugging Face documents): only the last prompt token
        and the sampled tokens run on the n rows. With `self.shared_prefix` the n rows attend to
        ONE copy of the prompt's keys and values and draw tokens by inverse CDF
        (harness/models/shared_prefix.py); otherwise the cache is repeated n times. Rows come back
        grouped by prompt, like num_return_sequences. Returns prompt + new token ids for B * n rows.
        """
        import torch

        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        row_sampler = self._row_sampler(gen, seeds)
        greedy_mode = self._generation_config(GenConfig(max_new_tokens=gen.budget), 1)
        if bool((ids[:, -1] == self.image_token_id).any()):  # a template ending in an image: no split point
            torch.manual_seed(gen.seed)
            with torch.inference_mode():
                if row_sampler:  # n copies at temperature 1 choose exactly the token the row sampler drew
                    copies = self._generation_config(GenConfig(max_new_tokens=gen.budget, temperature=1.0), n)
                    return self.model.generate(**inputs, generation_config=copies, logits_processor=row_sampler)
                return self.model.generate(**inputs, generation_config=self._generation_config(gen, n))
        prefix = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        if "mm_token_type_ids" in prefix:
            prefix["mm_token_type_ids"] = prefix["mm_token_type_ids"][:, :-1]
        once = self._generation_config(GenConfig(max_new_tokens=1), 1)
        once.return_dict_in_generate = True
        with torch.inference_mode():
            first = self.model.generate(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], **prefix,
                                        generation_config=once)
            cache = first.past_key_values  # holds exactly the n-1 prompt tokens' keys and values
            # Qwen2-VL keeps the M-RoPE offset of each row from the prefill; it must follow the copies.
            inner = getattr(self.model, "model", None)
            if getattr(inner, "rope_deltas", None) is not None:
                inner.rope_deltas = inner.rope_deltas.repeat_interleave(n, dim=0)
            rows = {"input_ids": ids.repeat_interleave(n, dim=0), "attention_mask": mask.repeat_interleave(n, dim=0)}
            torch.manual_seed(gen.seed)
            if not self.shared_prefix:
                cache.batch_repeat_interleave(n)
                if row_sampler:
                    return self.model.generate(**rows, past_key_values=cache, generation_config=greedy_mode,
                                               logits_processor=row_sampler)
                return self.model.generate(**rows, past_key_values=cache,
                                           generation_config=self._generation_config(gen, 1))
            from harness.models.shared_prefix import decoding_with, sampling_processors, shared_prefix_cache

            # +1: the last prompt token is written to each row's own part too.
            shared = shared_prefix_cache(cache, mask[:, :-1], capacity=gen.budget + 1)
            sampler = row_sampler or ([] if gen.greedy else sampling_processors(gen.temperature, gen.top_k, gen.top_p))
            with decoding_with(self.model, shared):
                return self.model.generate(**rows, past_key_values=shared, generation_config=greedy_mode,
                                           logits_processor=sampler)

    def _generation_config(self, gen: GenConfig, n: int):
        import copy

        config = copy.deepcopy(self.model.generation_config)
        config.max_new_tokens = gen.budget
        config.pad_token_id = self.pad_token_id
        if config.eos_token_id is None:
            config.eos_token_id = self.tokenizer.eos_token_id
        if gen.greedy:
            config.do_sample, config.num_return_sequences = False, 1
            config.temperature, config.top_p, config.top_k = None, None, None
        else:
            config.do_sample, config.num_return_sequences = True, n
            config.temperature, config.top_p = gen.temperature, gen.top_p
            config.top_k = gen.top_k  # 0 disables top-k filtering
        return config

    def choice_losses(self, prompts: Sequence[Prompt], choices: Sequence[Sequence[str]],
                      blind: bool = False) -> list[list[float]]:
        """Mean token cross-entropy of each choice as the assistant reply (its end-of-turn token
        included, so a choice is scored as the whole reply), all in one forward pass."""
        import torch

        if len(prompts) != len(choices):
            raise ValueError("prompts and choices must have the same length")
        examples = []
        for prompt, options in zip(prompts, choices):
            feats = self._encode_images(self._open(prompt, blind))  # once per prompt
            examples += [self._encode(prompt.text, [], option, image_feats=feats) for option in options]
        if not examples:
            return [[] for _ in prompts]
        batch = self._collate(examples, with_labels=True)
        labels = batch.pop("labels")
        with torch.inference_mode():
            logits = self.model(**batch).logits.float()
        losses = sequence_losses(logits, labels).tolist()
        out, start = [], 0
        for options in choices:
            out.append(losses[start:start + len(options)])
            start += len(options)
        return out


def sequence_losses(logits: "torch.Tensor", labels: "torch.Tensor") -> "torch.Tensor":
    """Per-row mean next-token cross-entropy over the positions whose label is not -100."""
    import torch.nn.functional as F

    shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
    token_loss = F.cross_entropy(
        shift_logits.transpose(1, 2), shift_labels, ignore_index=IGNORE_INDEX, reduction="none"
    )
    counts = (shift_labels != IGNORE_INDEX).sum(1).clamp(min=1)
    return token_loss.sum(1) / counts


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"
