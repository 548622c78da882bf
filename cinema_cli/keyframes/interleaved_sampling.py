"""Flow matching over interleaved sequences: each pair at its own noise level.

FLUX.2 is a rectified flow: a latent at noise level σ is (1 − σ)·x0 + σ·ε and the model
predicts the velocity ε − x0. Diffusion forcing gives every pair its own σ: in training
all pairs are noised independently and all are learned; in sampling the context pairs are
given a small noise once (σ from `context_noise`, timesteps 1–250 of 1000 by default: the
range Captain Cinema found keeps identity best) and stay there, while the new keyframes
walk the schedule from pure noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from cinema_cli.keyframes.interleaved_model import InterleavedFlux2, Pair, interleave

# (step index, timestep in [0, 1000]) -> the next latents, as a diffusers scheduler steps.
Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def noised(x0: torch.Tensor, noise: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    return (1 - sigma) * x0 + sigma * noise


def context_sigmas(count: int, context_noise: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """One noise level per context pair, timesteps drawn uniformly in `context_noise` (of 1000)."""
    low, high = context_noise
    steps = torch.randint(low, high + 1, (count,), generator=generator)
    return steps.float() / 1000


def noisy_context(context: Sequence[Pair], context_noise: tuple[int, int], generator: torch.Generator
                  ) -> tuple[list[Pair], torch.Tensor]:
    sigmas = context_sigmas(len(context), context_noise, generator)
    pairs = []
    for pair, sigma in zip(context, sigmas):
        noise = torch.randn(pair.latents.shape, generator=generator).to(pair.latents)
        pairs.append(replace(pair, latents=noised(pair.latents, noise, float(sigma))))
    return pairs, sigmas


@dataclass(frozen=True)
class Target:
    """A keyframe to draw: its caption's text states and its token grid."""

    text: torch.Tensor
    height: int
    width: int


@torch.no_grad()
def sample_causal(model: InterleavedFlux2, context: Sequence[Pair], target: Target, noise: torch.Tensor,
                  timesteps: torch.Tensor, step: Step, *, context_noise: tuple[int, int], generator: torch.Generator,
                  negative: torch.Tensor | None = None, guidance: float = 1.0,
                  progress: Callable[[int, int], None] = lambda done, total: None) -> torch.Tensor:
    """One new keyframe after `context` (clean latents, oldest first): the context is run
    once under the causal mask and its K/V kept; each step computes only the new pair.
    `timesteps` are the scheduler's (0..1000); `step` advances the latents."""
    past = None
    if context:
        pairs, sigmas = noisy_context(context, context_noise, generator)
        past = model.remember(interleave(pairs), sigmas[None].to(noise.dtype))
    latents = noise
    first = len(context)
    for index, t in enumerate(timesteps):
        level = (t / 1000).reshape(1, 1).to(latents.dtype)
        velocity = _velocity(model, target.text, target, latents, level, first, past)
        if negative is not None and guidance > 1:
            unguided = _velocity(model, negative, target, latents, level, first, past)
            velocity = unguided + guidance * (velocity - unguided)
        latents = step(velocity[0], t, latents)
        progress(index + 1, len(timesteps))
    return latents


@torch.no_grad()
def sample_joint(model: InterleavedFlux2, targets: Sequence[Target], noises: Sequence[torch.Tensor],
                 timesteps: torch.Tensor, step: Step, *, negative: Sequence[torch.Tensor] | None = None,
                 guidance: float = 1.0, progress: Callable[[int, int], None] = lambda done, total: None
                 ) -> list[torch.Tensor]:
    """Several keyframes drawn together (Appendix F's offline storyboard): every pair walks
    the schedule from its own noise, all at the same level, under the bidirectional mask,
    so each keyframe sees every other one at every step. `negative`: one caption's states
    per pair for the unguided pass. Returns each keyframe's latents."""
    lengths = [n.shape[0] for n in noises]
    latents = torch.cat(list(noises))  # stepped as one tensor: the scheduler keeps one step count

    def velocity(texts: Sequence[torch.Tensor], level: torch.Tensor) -> torch.Tensor:
        pairs = [Pair(x, t.height, t.width, text) for x, t, text in zip(latents.split(lengths), targets, texts)]
        return model(interleave(pairs), level, "bidirectional")[0]

    for index, t in enumerate(timesteps):
        level = (t / 1000).reshape(1, 1).expand(1, len(targets)).to(latents.dtype)
        guided = velocity([target.text for target in targets], level)
        if negative is not None and guidance > 1:
            unguided = velocity(negative, level)
            guided = unguided + guidance * (guided - unguided)
        latents = step(guided, t, latents)
        progress(index + 1, len(timesteps))
    return list(latents.split(lengths))


def _velocity(model, text, target: Target, latents, level, first, past):
    seq = interleave([Pair(latents, target.height, target.width, text)], first_pair=first)
    return model(seq, level, "causal", past=past)


def flow_matching_loss(model: InterleavedFlux2, pairs: Sequence[Pair], sigmas: torch.Tensor,
                       generator: torch.Generator, mask: str = "bidirectional") -> torch.Tensor:
    """Diffusion-forcing loss of one sequence: every pair noised at its own σ, the mean
    squared error of the predicted velocity over every pair's tokens."""
    noises = [torch.randn(p.latents.shape, generator=generator).to(p.latents) for p in pairs]
    noisy = [replace(p, latents=noised(p.latents, n, float(s))) for p, n, s in zip(pairs, noises, sigmas)]
    prediction = model(interleave(noisy), sigmas[None].to(pairs[0].latents.dtype), mask)
    target = torch.cat([n - p.latents for p, n in zip(pairs, noises)])[None]
    return torch.nn.functional.mse_loss(prediction.float(), target.float())
