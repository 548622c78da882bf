"""Making one Helios shot, chunk by chunk, from the film's history: the conditioning
(prompt, keyframe), the routing of each chunk's history slots, the noise, the chunk.

Randomness comes from the shot's seed alone, drawn on the CPU in a fixed order (the
keyframe's latent and its noise from one generator, the chunks' noise from another, as
the pipeline draws them), so the same shot is the same on any device and after any past.
"""

from __future__ import annotations

from collections.abc import Callable

from cinema_cli.video.base import ShotRequest
from cinema_cli.video.camr import probe_scores
from cinema_cli.video.causal import KEYFRAME_INDEX, LatentHistory, Routing
from cinema_cli.video.helios_chunks import (
    ChunkConditioning,
    decode_chunk,
    denoise_chunk,
    latent_stats,
    sigmas_and_shift,
)
from cinema_cli.video.helios_memory import FramePool, choose, forced_frames, routing
from cinema_cli.video.prompting import shot_prompt
from cinema_cli.video.wan_model import read_image

KEYFRAME = KEYFRAME_INDEX  # the own-frame index of the keyframe's latent (the pipeline's "fake image latent")
MAX_TEXT_TOKENS = 512  # the pipeline's default max_sequence_length


class ShotMaker:
    def __init__(self, pipe, options, request: ShotRequest, cut: bool, history: LatentHistory, who: str):
        import torch

        self.pipe, self.options, self.request, self.cut, self.who = pipe, options, request, cut, who
        self.device = pipe._execution_device
        self.sizes = tuple(options.history)
        self.latent_h = request.height // pipe.vae_scale_factor_spatial
        self.latent_w = request.width // pipe.vae_scale_factor_spatial
        self.cond = self._conditioning()
        self.noise = torch.Generator().manual_seed(request.seed)
        self.prefix, own = self._keyframe()
        self.pool = FramePool(history, history.frames(), request.shot_id, own)
        self.made: list = []  # this shot's chunks, [1, C, L, h, w] each
        self.routings: list[Routing] = []

    def _conditioning(self) -> ChunkConditioning:
        import torch

        r = self.request
        guided = self.options.guidance > 1.0
        with torch.no_grad():
            positive, negative = self.pipe.encode_prompt(
                prompt=shot_prompt(r.caption, r.framing, r.move), negative_prompt=self.options.negative_prompt,
                do_classifier_free_guidance=guided, max_sequence_length=MAX_TEXT_TOKENS, device=self.device)
        dtype = self.pipe.transformer.dtype
        return ChunkConditioning(positive.to(dtype), negative.to(dtype) if guided else None, self.options.guidance)

    def _keyframe(self):
        """The prefix frame [1, C, 1, h, w] and the shot's own frames so far: with a keyframe,
        its noised latent is the prefix and its latent as a still video's last frame is
        the newest history frame, as the pipeline's image-to-video conditioning does."""
        import torch

        r = self.request
        if not r.keyframe.exists():
            return torch.zeros(1, self.pipe.transformer.config.in_channels, 1, self.latent_h, self.latent_w,
                               device=self.device), {}
        image = self.pipe.video_processor.preprocess(read_image(r.keyframe, r.width, r.height, self.who),
                                                     height=r.height, width=r.width)
        mean, inverse_std = latent_stats(self.pipe, self.device)
        generator = torch.Generator().manual_seed(r.seed)
        with torch.no_grad():
            prefix, still = self.pipe.prepare_image_latents(image.to(self.device), mean, inverse_std,
                                                            self.options.chunk, dtype=torch.float32,
                                                            device=self.device, generator=generator)
        low, high = IMAGE_NOISE_RANGE
        sigma = torch.rand(1, generator=generator).item() * (high - low) + low
        prefix = sigma * torch.randn(prefix.shape, generator=generator).to(prefix) + (1 - sigma) * prefix
        return prefix, {KEYFRAME: still[0, :, 0].cpu()}

    # ------------------------------------------------------------ chunks

    def next_chunk(self, step_done: Callable[[int], None], decode: bool = True):
        """Denoise the next chunk; its decoded frames in [0, 1], (frames, height, width, 3)
        (None when not `decode`: the bench's model-only timing)."""
        import torch

        shape = (1, self.pipe.transformer.config.in_channels, self.options.chunk, self.latent_h, self.latent_w)
        noise = torch.randn(shape, generator=self.noise).to(self.device)
        chosen = self._route(noise)
        slots = self._slots(chosen)
        sizes = self.sizes if self.options.memory != "full" else _grown(self.sizes, slots.shape[2])
        prefix = self.prefix
        if self.made and not self.request.keyframe.exists():
            prefix = self.made[0][:, :, :1]  # the shot's first frame, as the pipeline keeps it
        latents = denoise_chunk(self.pipe, self.cond, prefix, slots, sizes, noise, self.options.steps, step_done)
        self.made.append(latents)
        first_own = len(self.made) * self.options.chunk - self.options.chunk
        for i in range(latents.shape[2]):
            self.pool.own[first_own + i] = latents[0, :, i].cpu()
        return decode_chunk(self.pipe, latents) if decode else None

    def _route(self, noise):
        refs = self.pool.refs
        keep_own = self.sizes[1] + self.sizes[2]  # the mid and short slots: the shot's own motion
        forced = forced_frames(self.pool, keep_own, keep_newest_past=not self.cut and not self.made)
        scores = None
        if self.options.memory == "camr":
            scores = self._scores(refs, noise) if refs else {}
        budget = sum(self.sizes)
        chosen = choose(self.options.memory, refs, budget, forced, scores)
        notes = {"budget": budget, "chunk": len(self.made), "cut": self.cut,
                 "forced": [[r.shot_id, r.index] for r in forced]}
        if self.options.memory == "camr":
            notes["probe_layers"] = list(self.options.probe_layers)
        self.routings.append(routing(self.options.memory, refs, chosen, scores, notes))
        return chosen

    def _scores(self, refs, noise):
        import torch

        sigmas, mu = sigmas_and_shift(self.pipe, self.options.steps, self.options.chunk, self.latent_h,
                                      self.latent_w)
        self.pipe.scheduler.set_timesteps(self.options.steps, device=self.device, sigmas=sigmas, mu=mu)
        first = self.pipe.scheduler.timesteps[0].expand(1)
        prefix_is_real = self.request.keyframe.exists() or bool(self.made)
        prefix = self.prefix if not self.made or self.request.keyframe.exists() else self.made[0][:, :, :1]
        with torch.no_grad():
            return probe_scores(self.pipe.transformer, noise, first, self.cond.prompt_embeds, prefix,
                                prefix_is_real, self._device_batches(refs), self.options.probe_layers,
                                self.options.probe_queries, sum(self.sizes))

    def _device_batches(self, refs):
        for group, latents in self.pool.batches(refs, self.options.probe_group):
            yield group, latents.to(self.device)

    def _slots(self, chosen):
        """The routed frames [1, C, max(budget, routed), h, w], zeros before them when fewer
        than the budget (as the pipeline's history starts)."""
        import torch

        budget = sum(self.sizes)
        shape = (1, self.pipe.transformer.config.in_channels, max(0, budget - len(chosen)), self.latent_h,
                 self.latent_w)
        empty = torch.zeros(shape, device=self.device)
        if not chosen:
            return empty
        return torch.cat([empty, self.pool.gather(chosen).to(self.device)], dim=2)

    def shot_latents(self):
        """The shot's generated latent frames [C, T, h, w] on the CPU (its keyframe's latent is not one)."""
        import torch

        return torch.cat(self.made, dim=2)[0].cpu()


IMAGE_NOISE_RANGE = (0.111, 0.135)  # Helios-Base's noise on the keyframe's latent (the pipeline's defaults)


def _grown(sizes: tuple[int, int, int], frames: int) -> tuple[int, int, int]:
    """`memory: full`: everything older than the mid and short slots goes to the long slot."""
    return (frames - sizes[1] - sizes[2], sizes[1], sizes[2])

