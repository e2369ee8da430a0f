"""A scripted backend: the one stand-in for a model (tests, dry runs), like inspect_ai's mockllm.

    backend = MockBackend(lambda req: f"Answer: {'ABCD'[len(req.text) % 4]}")
    backend = MockBackend("Answer: A")                                   # the same reply to everything
    result = evaluate(backend, task, items, EvalSettings(), run_dir, cache)
    backend.calls, [r.text for r in backend.requests]                    # what was asked

`reply` gets one MockRequest per sample (the prompt, its text, the generation settings, the
sample index k of the n asked for, the sample's seed) and returns the output text. It speaks the
runner's Backend protocol: name, content_hash (part of every cache key: two scripts that answer
differently need different hashes), generate and choice_losses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from harness.core.types import GenConfig, Prompt


@dataclass(frozen=True)
class MockRequest:
    prompt: Prompt
    gen: GenConfig
    k: int = 0  # which of the n samples of this prompt
    seed: int | None = None
    blind: bool = False

    @property
    def text(self) -> str:
        return self.prompt.text


class MockBackend:
    def __init__(self, reply: str | Callable[[MockRequest], str] = "", name: str = "mock",
                 content_hash: str = "mock000000000000",
                 losses: Callable[[Prompt, Sequence[str]], list[float]] | None = None) -> None:
        self.reply = (lambda req: reply) if isinstance(reply, str) else reply
        self.name, self.content_hash, self.losses = name, content_hash, losses
        self.calls = 0  # generate / choice_losses calls
        self.requests: list[MockRequest] = []  # every sample asked for, in order

    def generate(self, prompts: Sequence[Prompt], gen: GenConfig, n: int = 1, blind: bool = False,
                 seeds: Sequence[int] | None = None) -> list[list[str]]:
        self.calls += 1
        out = []
        for i, prompt in enumerate(prompts):
            reqs = [MockRequest(prompt, gen, k, seeds[i * n + k] if seeds else None, blind) for k in range(n)]
            self.requests += reqs
            out.append([self.reply(r) for r in reqs])
        return out

    def generate_images(self, texts: Sequence[str], images: Sequence[Sequence[object]], gen: GenConfig,
                        n: int = 1, seeds: Sequence[int] | None = None) -> list[list[str]]:
        """HFBackend's call for already opened images (training loops); the script sees the text."""
        return self.generate([Prompt(t) for t in texts], gen, n=n, seeds=seeds)

    def choice_losses(self, prompts: Sequence[Prompt], choices: Sequence[Sequence[str]],
                      blind: bool = False) -> list[list[float]]:
        if self.losses is None:
            raise NotImplementedError("this MockBackend was given no `losses` script (likelihood-scored tasks)")
        self.calls += 1
        return [self.losses(p, c) for p, c in zip(prompts, choices)]
