"""Run a Hugging Face VLM checkpoint: batched generation and likelihoods of given replies.

    backend = HFBackend(resolve_checkpoint("tiny"))
    outputs = backend.generate([Prompt("What is shown?", (Path("cat.png"),))], GenConfig())

Inputs are built by the checkpoint's own processor class, chosen and driven per model family in
harness/models/families.py (the only place that names families). Sequences are LEFT padded so batched
generation continues every row right after its own prompt.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Sequence

from harness.core.images import open_image
from harness.core.types import GenConfig, Prompt
from harness.errors import ContextOverflow, HarnessError
from harness.models import families
from harness.models.checkpoints import CheckpointRef
from harness.models.families import IGNORE_INDEX  # noqa: F401  (re-exported: trainers import it from here)
from harness.models.decoding import pick_decoding

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

_REPLY_MARK = "\u2063REPLY\u2063"  # an unlikely string, to find where a template puts the reply
_said: set[str] = set()


def _say_once(message: str) -> None:
    import sys

    if message not in _said:
        _said.add(message)
        print(f"note: {message}", file=sys.stderr)


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
        self.trust_remote_code = trust_remote_code or families.family_of(ref.model_type).remote_code
        self.model = self._load_model() if model is None else model.eval()
        self.model_family = str(self.model.config.model_type)
        self.start_adapter: str | None = None  # the adapter a treatment continues (trainers.common.load_base)
        self._load_processors()
        # How n samples of a prompt are decoded, picked once (harness/models/decoding.py).
        self.decoding = pick_decoding(self.model, self.family)

    # ---- loading -------------------------------------------------------------------------
    def _load_model(self):
        from transformers import AutoModelForImageTextToText

        model_dir = self.ref.base_path if self.ref.kind == "adapter" else self.ref.path
        if self.trust_remote_code and (missing := families.missing_remote_code(model_dir)):
            raise HarnessError(f"{model_dir} ({self.ref.model_type}) runs code shipped with the checkpoint, but "
                               f"{', '.join(missing)} is not in the folder; download the checkpoint's .py files too")
        try:
            model = AutoModelForImageTextToText.from_pretrained(
                model_dir, dtype=self.torch_dtype, use_safetensors=True,
                trust_remote_code=self.trust_remote_code,
            )
        except Exception as e:  # transformers raises many types for broken files
            raise HarnessError(f"cannot load checkpoint {model_dir}: {_one_line(e)}; re-save or re-download it") from None
        if self.ref.kind == "adapter":
            from harness.models.checkpoints import open_adapter

            try:
                # Merged once at load: generation then runs at the base model's speed.
                model = open_adapter(model, self.ref.path).merge_and_unload()
            except Exception as e:
                raise HarnessError(f"cannot load adapter {self.ref.path}: {_one_line(e)}; re-save it") from None
        return model.to(self.device).eval()

    def _load_processors(self) -> None:
        model_dir = self.ref.base_path if self.ref.kind == "adapter" else self.ref.path
        self.family = families.family_of(self.model_family)
        if not self.family.known:
            _say_once(f"model family {self.model_family!r} has no entry in harness/models/families.py; "
                      "running it through its processor (generic path)")
        self.processor = families.load_processor(model_dir, self.family, self.model.config, self.trust_remote_code)
        # An adapter folder may carry its own tokenizer (e.g. with added tokens); else the base's.
        tok_dir = model_dir
        if self.ref.kind == "adapter" and (self.ref.path / "tokenizer_config.json").is_file():
            from transformers import AutoTokenizer

            tok_dir = self.ref.path
            self.processor.tokenizer = AutoTokenizer.from_pretrained(tok_dir, trust_remote_code=self.trust_remote_code)
        self.tokenizer = self.processor.tokenizer
        self.image_processor = getattr(self.processor, "image_processor", None)
        self.chat_template = self.tokenizer.chat_template or getattr(self.processor, "chat_template", None)
        if self.chat_template is None:
            raise HarnessError(f"{tok_dir} has no chat template; save the tokenizer with one")
        self.image_token_id = families.image_token_id(self.processor, self.model.config)
        self.pad_token_id = self.tokenizer.pad_token_id
        if self.pad_token_id is None:
            self.pad_token_id = self.model.generation_config.pad_token_id or self.tokenizer.eos_token_id
        self.reply_prefix, self.reply_suffix = self._reply_format()

    def _reply_format(self) -> tuple[str, str]:
        """The text the chat template puts before and after an assistant reply (after the
        generation prompt), found once by rendering a marker reply."""
        user = [{"role": "user", "content": [{"type": "text", "text": "x"}]}]
        render = functools.partial(self.tokenizer.apply_chat_template, chat_template=self.chat_template, tokenize=False)
        prompt = render(user, add_generation_prompt=True)
        full = render(user + [{"role": "assistant", "content": [{"type": "text", "text": _REPLY_MARK}]}])
        if not full.startswith(prompt) or _REPLY_MARK not in full:
            return "", self.tokenizer.eos_token or ""
        prefix, suffix = full[len(prompt):].split(_REPLY_MARK, 1)
        # Trailing newlines after the end-of-turn token are not part of what the model must say.
        return prefix, suffix.rstrip()

    # ---- inputs ----------------------------------------------------------------------------
    def batch_inputs(self, texts: Sequence[str], images: Sequence[Sequence["Image"]],
                     targets: Sequence[str] | None = None) -> dict[str, Any]:
        """Model inputs for user turns `texts` with `images` (PIL, per example), left padded,
        built by the family's processor (harness/models/families.py).

        With `targets`, each reply (plus the template's end-of-turn token) is appended and
        `labels` holds the reply token ids, -100 elsewhere (prompt, image tokens, padding).
        """
        if len(texts) != len(images) or (targets is not None and len(targets) != len(texts)):
            raise ValueError("texts, images and targets must have the same length")
        batch = families.build_batch(self.processor, self.family, texts, images, targets,
                            reply=(self.reply_prefix, self.reply_suffix), chat_template=self.chat_template,
                            pad_token_id=self.pad_token_id, image_token=self.image_token_id, dtype=self.torch_dtype)
        limit = self.context_limit()
        if limit and batch["input_ids"].shape[1] > limit:  # image tokens included: what check_prompts cannot see
            raise ContextOverflow(f"a prompt of {batch['input_ids'].shape[1]} tokens (images included) exceeds the "
                               f"model's context of {limit} tokens; shorten the question or use smaller images")
        return {k: v.to(self.device) for k, v in batch.items()}

    def context_limit(self) -> int | None:
        """The model's context in tokens (None: its config does not say); training checks rows against it."""
        return getattr(self.model.config.get_text_config(), "max_position_embeddings", None)

    def _prompt_ids(self, text: str, n_images: int) -> list[int]:
        """Token ids of one rendered user turn, one placeholder per image (not yet expanded)."""
        limit = self.context_limit()
        if limit and len(text) > 64 * limit:  # never tokenize a 10 MB line: it cannot fit the context anyway
            raise ContextOverflow(f"a prompt of {len(text)} characters cannot fit the model's context of {limit} "
                               "tokens; shorten the question")
        (rendered,) = families.render_prompts(self.tokenizer, self.chat_template, [text], [n_images])
        # Templates that omit BOS rely on the tokenizer adding it (as the family's processor does).
        bos = self.tokenizer.bos_token
        return self.tokenizer(rendered, add_special_tokens=bool(bos) and not rendered.startswith(bos))["input_ids"]

    def render_prompt(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool) -> str:
        """`messages` (content parts) through the checkpoint's chat template, as text."""
        return self.tokenizer.apply_chat_template(list(messages), chat_template=self.chat_template, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def conversation_inputs(self, pieces: Sequence[Sequence[tuple[str, bool]]],
                            images: Sequence[Sequence["Image"]]) -> dict[str, Any]:
        """Left-padded inputs of rendered conversations given as (text, learn) pieces; `labels` hold
        the ids of the pieces to learn (assistant replies), -100 elsewhere."""
        batch = families.build_labelled(self.processor, self.family, pieces, images, image_token=self.image_token_id,
                                        dtype=self.torch_dtype)
        return {k: v.to(self.device) for k, v in batch.items()}

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
        limit = self.context_limit()
        if not limit:
            return
        for item_id, prompt in prompts:
            # A token spans at most a few dozen characters: far longer text is refused untokenized
            # (tokenizing a 10 MB line costs gigabytes).
            n = limit * 64 if len(prompt.text) > limit * 64 else len(self._prompt_ids(prompt.text, len(prompt.images)))
            if n + max_new_tokens > limit:
                raise ContextOverflow(f"item {item_id}: prompt of {'over ' if n == limit * 64 else ''}{n} tokens plus "
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
            gen_config = self.generation_config(gen, n)
            sampler = self._row_sampler(gen, seeds)
            if sampler:  # greedy mode picks the token the per-row sampler drew
                gen_config = self.generation_config(GenConfig(max_new_tokens=gen.budget), 1)
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
        """`n` continuations per row of `inputs` by the strategy picked at load (`self.decoding`,
        harness/models/decoding.py: copies, prefill once, or shared prefix). Rows come back grouped
        by prompt, like num_return_sequences. Returns prompt + new token ids for B * n rows."""
        return self.decoding.expand(self, inputs, gen, n, self._row_sampler(gen, seeds))

    @property
    def shared_prefix(self) -> bool:
        """Whether the rows of a prompt share one copy of its keys and values (a capability compare asks for)."""
        return self.decoding.shares_prefix

    def generate_common_prefix(self, prompts: Sequence[Prompt], gen: GenConfig) -> list[list[str]] | None:
        """Greedy replies to prompts whose prompts with the same images share a token prefix (one
        question's self-select prompts): each prefix prefilled once (harness.models.shared_prefix.
        common_prefix_generate). None where that path does not apply; the caller then generates."""
        from harness.models.shared_prefix import common_prefix_generate

        if not self.shared_prefix:
            return None
        opened: dict[Any, Any] = {}  # each question's images decoded once per batch

        def image(ref):
            if ref not in opened:
                opened[ref] = open_image(ref)
            return opened[ref]

        images = [[image(ref) for ref in p.images] for p in prompts]
        replies = common_prefix_generate(self, [p.text for p in prompts], images, [tuple(p.images) for p in prompts], gen)
        return None if replies is None else [[r] for r in replies]

    def generation_config(self, gen: GenConfig, n: int = 1):
        """The checkpoint's generation config set to `gen` (n sequences per prompt when sampling)."""
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
        texts, images, targets = [], [], []
        for prompt, options in zip(prompts, choices):
            opened = self._open(prompt, blind)
            for option in options:
                texts.append(prompt.text)
                images.append(opened)
                targets.append(option)
        if not texts:
            return [[] for _ in prompts]
        batch = self.batch_inputs(texts, images, targets)
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
