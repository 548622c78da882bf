"""The video family: Wan trained on multi-shot samples, in two modes, on the shared loop.

`scene` (HoloCine): a sample is one text-to-video clip of 1 + the shots' frames (each a
multiple of 4, so every cut falls on a latent frame), its prompt HoloCine's hierarchical
caption. The scene processors (attention/processors.py) are installed on the experts
exactly as the `holocine` backend installs them, with the layout its denoising builds
(`holocine_denoise.conditioning` and `shot_layout`): window cross-attention and, with
`sparse`, sparse inter-shot self-attention, in forward and backward.

`keyframes` (Captain Cinema's bottom-up V_k = {I_k, G(I_1:K, c_tiled)}): each shot is a
Wan clip of 4k+1 frames opening on its keyframe (the paper's keyframe is the first frame
of its shot). Conditioning is the `keyframe-scene` backend's (scene_denoise): the shots'
latents joined along time; each shot's *own* keyframe enters through the image-to-video
mask/latent channels at its first latent frame (`shot_condition`) and its first latent
frame is that keyframe's latent; the *other* keyframes enter as reference tokens — the
other shots' first latent frames, which sparse inter-shot self-attention lets every shot
see; the captions are one tiled prompt (global part, then each shot's) read through
window cross-attention. The loss leaves out each shot's first latent frame: it is the
conditioning keyframe, not something to generate.

Flow matching as Wan trains: x_t = (1 - σ) x_0 + σ ε, the transformer predicts ε - x_0 at
timestep 1000 σ. Wan2.2 A14B's experts split the timesteps at `boundary_ratio`: the
high-noise expert (transformer) trains on σ ≥ boundary, the low-noise one (transformer_2)
below; with `expert: both` every sample trains each expert once on its own range, so the
two stay separate trainings (separate LoRAs) that see the same data.

With `cp` above 1 each sample's video tokens are split over a group of cp processes
(Ulysses context parallelism, attention/context_parallel): diffusers' `_cp_plan` hooks
split the tokens before the first block and gather them after `proj_out`, and the scene
processors exchange heads for their pattern, in forward and backward. Every process of
the group computes the whole sample's loss; the loop sums the group's gradients.

With `engine: fsdp` (a full fine-tune) the loop shards each trained expert over all
processes, block by block (`shard_units`, fsdp.py), and hands `save_weights` the full
state dict it gathered from the shards.
"""

from __future__ import annotations

import os
import random
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from cinema_cli.errors import BadInput
from cinema_cli.train import fsdp
from cinema_cli.train import sequences as seqs
from cinema_cli.train.engine import make_trainable
from cinema_cli.train.video_config import VideoTrainConfig

# LoRA on every projection of both attentions and the feed-forward of every block.
LORA_TARGETS = r".*blocks\.\d+\.(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)$|.*blocks\.\d+\.ffn\.net\.(0\.proj|2)$"
EXPERT_MODULES = {"high": "transformer", "low": "transformer_2"}
PIPELINES = {"scene": "WanPipeline", "keyframes": "WanImageToVideoPipeline"}


def lora_file(expert: str) -> str:
    return f"lora_{expert}.safetensors"


@dataclass
class Prepared:
    """One sample, encoded once (frozen VAE and text encoder): what every step reuses."""

    latents: object  # (1, z, T, h, w) normalised clean latents x_0
    condition: object | None  # keyframes mode: (1, 4 + z, T, h, w) I2V mask/latents
    prompt: object  # (1, 512, text width)
    shots: object  # ShotLayout
    prompts: object  # PromptLayout
    loss_mask: object  # (1, 1, T, 1, 1): 1 where the loss counts


@dataclass
class Job:
    """One transformer call of a step: which expert, its input and the target."""

    expert: str
    inputs: object
    timestep: object
    prompt: object
    target: object
    loss_mask: object
    shots: object
    prompts: object


class VideoTraining:
    name = "video"

    def __init__(self, config: VideoTrainConfig, dataset: Path):
        """Reads and checks the dataset and the base model's kind; loads no model."""
        from cinema_cli.data.reader import Dataset

        self.config = config
        self.data = Dataset(dataset)
        samples = list(self.data.multishot())
        usable = [s for s in samples if 2 <= len(s.shots) <= config.max_shots]
        if not usable:
            found = f"{len(samples)} multi-shot samples, none of 2..{config.max_shots} shots" if samples else \
                "no multi-shot samples (set `samples: {targets: [...]}` in its dataset.yaml and prepare it again)"
            raise BadInput(f"{dataset} holds {found}: nothing to train a video model on")
        # The last sample is held out for the validation clips when there is another to train on.
        self.held_out = usable[-1] if config.validate_every and len(usable) > 1 else None
        self.samples = usable[:-1] if self.held_out is not None else usable
        present = check_base(config.base, config.mode)
        if present is not None:
            check_expert(config, present)
        if config.cp > 1:
            from cinema_cli.train.engine import launch_message

            geometry = base_geometry(config.base)
            if geometry is not None:
                check_context_parallel(config, *geometry)
            world = int(os.environ.get("WORLD_SIZE", "1"))  # as accelerate / torchrun launched this
            if world % config.cp:
                raise BadInput(launch_message(config.cp, world))
        self._prepared: dict = {}

    # ------------------------------------------------------------ model

    def build(self, device):
        import torch

        from cinema_cli.attention.processors import SceneAttention, install_scene_attention
        from cinema_cli.train.video_model import VideoModel

        cuda = device.type == "cuda"
        weights = torch.bfloat16 if cuda and self.config.precision != "fp32" else torch.float32
        self.pipe = load_base(self.config.base, self.config.mode, weights)
        self.device = device
        self.pipe.vae.to(device).requires_grad_(False)
        self.pipe.text_encoder.to(device).requires_grad_(False)
        present = [e for e, module in EXPERT_MODULES.items() if getattr(self.pipe, module, None) is not None]
        self.experts = check_expert(self.config, present)
        self.boundary = self.pipe.config.boundary_ratio if len(present) == 2 else None
        # What the installed processors read; every transformer of the pipeline gets them,
        # trained or not, as the backends install them at inference.
        self.scene = SceneAttention(sparse_self=self.config.sparse or self.config.mode == "keyframes")
        modules = {}
        sharded = fsdp.wanted(self.config, int(os.environ.get("WORLD_SIZE", "1")))
        for expert in present:
            transformer = getattr(self.pipe, EXPERT_MODULES[expert])
            trained = expert in self.experts
            # An expert not trained is needed only to render validation clips; a trained one
            # the loop shards stays on the CPU (sharding moves it over block by block).
            if (trained and not sharded) or (not trained and self.config.validate_every):
                transformer.to(device)
            transformer.requires_grad_(False)
            install_scene_attention(transformer, self.scene)
            if expert in self.experts:
                make_trainable(transformer, self.config, LORA_TARGETS, checkpoint=self._checkpoint)
                modules[expert] = transformer
            transformer.train(expert in self.experts)
        transformer = self.pipe.transformer
        check_context_parallel(self.config, transformer.config.num_attention_heads,
                               self.pipe.vae_scale_factor_spatial * transformer.config.patch_size[1])
        return VideoModel(modules, self.scene)

    def parallelize(self, model, groups) -> None:
        """Ulysses context parallelism over the groups' cp processes on every transformer of
        the pipeline (the untrained ones render validation clips), all on the one
        (data, ring, ulysses) mesh the loop made."""
        from diffusers import ContextParallelConfig

        from cinema_cli.runtime.parallel import enable_context_parallel

        for module in EXPERT_MODULES.values():
            transformer = getattr(self.pipe, module, None)
            if transformer is not None:
                enable_context_parallel(transformer, ContextParallelConfig(ulysses_degree=groups.cp),
                                        self.device.type, mesh=groups.mesh)

    def shard_units(self, model) -> list:
        """engine: fsdp shards each trained expert's blocks one by one, then the rest of it."""
        return [(transformer, list(transformer.blocks)) for transformer in model.experts.values()]

    def _checkpoint(self, block, *args):
        """Per-block activation checkpointing whose recomputation runs under the scene
        layout the block first ran with: the processors read the layout from `self.scene`,
        which a later sample of the same step has changed by the time backward recomputes."""
        import torch.utils.checkpoint

        saved = (self.scene.shots, self.scene.prompts, self.scene.sparse_self)

        @contextmanager
        def restored():
            now = (self.scene.shots, self.scene.prompts, self.scene.sparse_self)
            self.scene.shots, self.scene.prompts, self.scene.sparse_self = saved
            try:
                yield
            finally:
                self.scene.shots, self.scene.prompts, self.scene.sparse_self = now

        return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False,
                                                 context_fn=lambda: (nullcontext(), restored()))

    def save_weights(self, model, folder: Path, state: dict | None = None) -> None:
        """One file per expert in diffusers' Wan LoRA format (lora_high / lora_low
        .safetensors, keys `transformer.<module>.lora_A/B.weight`; load the low one with
        `load_lora_weights(..., load_into_transformer_2=True)`), or (full fine-tune) each
        trained expert as a transformer folder `from_pretrained` reads. `state`: the
        model's full state dict when its parameters are sharded (engine: fsdp)."""
        for expert, transformer in model.experts.items():
            if self.config.method == "lora":
                from peft.utils import get_peft_model_state_dict

                type(self.pipe).save_lora_weights(folder, transformer_lora_layers=get_peft_model_state_dict(transformer),
                                                  weight_name=lora_file(expert))
            elif state is None:
                transformer.save_pretrained(folder / EXPERT_MODULES[expert])
            else:
                prefix = f"experts.{expert}."
                save_transformer(transformer, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)},
                                 folder / EXPERT_MODULES[expert])

    # ------------------------------------------------------------ steps

    def step_samples(self, step: int, rank: int, world: int) -> list:
        chosen = seqs.step_sequences(self.samples, self.config.seed, 0, step, self.config.batch_size)
        local = self.config.batch_size // world
        return chosen[rank * local:(rank + 1) * local]

    def loss(self, model, step: int, rank: int, world: int):
        """This process's share of the step's batch. Which samples, σ and noise a global
        sample j gets depend on (seed, step, j) only, not on the process count."""
        import torch

        local = self.config.batch_size // world
        jobs = []
        for offset, sample in enumerate(self.step_samples(step, rank, world)):
            j = rank * local + offset
            generator = torch.Generator().manual_seed(random.Random(f"{self.config.seed}:{step}:{j}").getrandbits(63))
            prepared = self.prepared(sample)
            for expert in self.experts:
                sigma = self.draw_sigma(expert, generator)
                noise = torch.randn(prepared.latents.shape, generator=generator).to(prepared.latents)
                jobs.append(self.job(prepared, expert, sigma, noise))
        return model(jobs)

    def job(self, prepared: Prepared, expert: str, sigma: float, noise) -> Job:
        import torch

        clean = prepared.latents
        noisy = (1.0 - sigma) * clean + sigma * noise
        inputs = noisy if prepared.condition is None else torch.cat([noisy, prepared.condition], dim=1)
        timestep = torch.tensor([1000.0 * sigma], device=clean.device)
        return Job(expert, inputs, timestep, prepared.prompt, noise - clean, prepared.loss_mask, prepared.shots,
                   prepared.prompts)

    def sigma_range(self, expert: str) -> tuple[float, float]:
        if self.boundary is None:
            return 0.0, 1.0
        return (self.boundary, 1.0) if expert == "high" else (0.0, self.boundary)

    def draw_sigma(self, expert: str, generator) -> float:
        """σ on Wan's shifted flow schedule (σ = s·u / (1 + (s - 1)·u), u uniform), drawn
        within the expert's range by drawing u within the range's preimage."""
        import torch

        shift = self.config.shift
        low, high = (s / (shift - (shift - 1) * s) for s in self.sigma_range(expert))
        u = low + (high - low) * float(torch.rand((), generator=generator))
        return max(1e-3, shift * u / (1 + (shift - 1) * u))

    # ------------------------------------------------------------ data

    def prepared(self, sample) -> Prepared:
        if sample.key not in self._prepared:
            import torch

            from cinema_cli.train.video_data import sample_clips

            c = self.config
            clips = sample_clips(self.data, sample, c.shot_frames, c.fps, c.width, c.height)
            with torch.no_grad():
                build = self._scene_sample if c.mode == "scene" else self._keyframe_sample
                self._prepared[sample.key] = build(clips)
        return self._prepared[sample.key]

    def _tokens_per_frame(self) -> int:
        _, patch_h, patch_w = self.pipe.transformer.config.patch_size
        scale = self.pipe.vae_scale_factor_spatial
        return (self.config.height // scale // patch_h) * (self.config.width // scale // patch_w)

    def _scene_sample(self, clips) -> Prepared:
        """HoloCine: frame 0 (the first shot's first frame, Wan's lone first latent) and
        every shot's frames as one video; the prompt and layouts as the backend builds them."""
        import numpy as np
        import torch

        from cinema_cli.video.holocine_denoise import SceneJob, conditioning, shot_layout

        video = np.concatenate([clips.shots[0][:1], *clips.shots])
        latents = encode_frames(self.pipe, video)
        job = SceneJob(global_caption=clips.global_caption, shot_captions=clips.captions,
                       shot_frames=tuple(len(s) for s in clips.shots), width=self.config.width,
                       height=self.config.height, seed=0, steps=1, guidance=1.0, negative_prompt="",
                       sparse=self.config.sparse)
        prompt, windows, _ = conditioning(self.pipe, job, self.device, torch.float32)
        mask = torch.ones((1, 1, latents.shape[2], 1, 1), device=self.device)
        return Prepared(latents, None, prompt.float(), shot_layout(job, self._tokens_per_frame()), windows, mask)

    def _keyframe_sample(self, clips) -> Prepared:
        """The keyframe-scene backend's conditioning (scene_denoise): each shot a clip
        opening on its keyframe, with its I2V condition; the tiled prompt in parts."""
        import torch
        from PIL import Image

        from cinema_cli.attention.layout import ShotLayout
        from cinema_cli.video.scene_denoise import encode_parts, prompt_layout, shot_condition
        from cinema_cli.video.wan_model import latent_frames

        c = self.config
        latents, conditions, frames = [], [], []
        for shot in clips.shots:
            latents.append(encode_frames(self.pipe, shot))
            conditions.append(shot_condition(self.pipe, Image.fromarray(shot[0]), c.width, c.height, len(shot)))
            frames.append(latent_frames(len(shot)))
        prompt, lengths = encode_parts(self.pipe, [clips.global_caption, *clips.captions], self.device, torch.float32)
        latents = torch.cat(latents, dim=2)
        mask = torch.ones((1, 1, latents.shape[2], 1, 1), device=self.device)
        starts = [sum(frames[:i]) for i in range(len(frames))]
        mask[:, :, starts] = 0.0  # the keyframes: conditioning, not generated
        shots = ShotLayout.from_frames(frames, self._tokens_per_frame(), c.summary_frames)
        return Prepared(latents, torch.cat(conditions, dim=2), prompt.float(), shots, prompt_layout(lengths), mask)

    # ------------------------------------------------------------ rendering

    def render(self, sample, steps: int, seed: int = 0):
        """The sample's clip denoised from seeded noise by the pipeline's experts (with what
        they have learned): Euler over the shifted flow schedule, the high-noise expert
        above the boundary; in keyframes mode each shot's first latent anchored to its
        keyframe as the keyframe-scene backend anchors it. Returns the clean latents."""
        import numpy as np
        import torch

        from cinema_cli.video.wan_model import anchor_prediction

        prepared = self.prepared(sample)
        shift = self.config.shift
        sigmas = [shift * u / (1 + (shift - 1) * u) for u in np.linspace(1.0, 0.0, steps + 1)]
        generator = torch.Generator().manual_seed(seed)
        latents = torch.randn(prepared.latents.shape, generator=generator).to(prepared.latents)
        starts = [] if prepared.condition is None else \
            [int(i) for i in torch.nonzero(prepared.loss_mask.flatten() == 0).flatten()]
        self.scene.shots, self.scene.prompts = prepared.shots, prepared.prompts
        with torch.no_grad():
            for sigma, following in zip(sigmas[:-1], sigmas[1:]):
                high = self.boundary is None or sigma >= self.boundary
                model = self.pipe.transformer if high else self.pipe.transformer_2
                inputs = latents if prepared.condition is None else torch.cat([latents, prepared.condition], dim=1)
                dtype = next(model.parameters()).dtype
                prediction = model(hidden_states=inputs.to(dtype), timestep=torch.tensor([1000.0 * sigma]).to(self.device),
                                   encoder_hidden_states=prepared.prompt.to(dtype), return_dict=False)[0].float()
                for start in starts:
                    clean = prepared.condition[:, self.pipe.vae_scale_factor_temporal:, start:start + 1]
                    prediction = anchor_prediction(prediction, latents, start, clean, sigma)
                latents = latents + (following - sigma) * prediction
        return latents

    def validate(self, model, folder: Path | None, step: int) -> Path | None:
        """A short MP4 of the held-out sample rendered at this step (RUN/samples/step-N.mp4).
        No folder: render only (a context-parallel follower of the process that writes)."""
        if self.held_out is None:
            return None
        import numpy as np
        import torch

        from cinema_cli.assemble.ffmpeg import VideoWriter
        from cinema_cli.project.files import atomic_output
        from cinema_cli.video.base import EncodeSettings
        from cinema_cli.video.wan_model import decode

        training = {name: m.training for name, m in model.experts.items()}
        model.eval()
        try:
            latents = self.render(self.held_out, self.config.validation_steps, seed=self.config.seed)
            with torch.no_grad():
                frames = decode(self.pipe, latents)
        finally:
            for name, m in model.experts.items():
                m.train(training[name])
        if folder is None:
            return None
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / f"step-{step:08d}.mp4"
        height, width = frames.shape[1:3]
        with atomic_output(out) as temp, VideoWriter(temp, width, height, round(self.config.fps), EncodeSettings()) as w:
            for frame in frames:
                w.write((np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
        return out


def save_transformer(transformer, weights: dict, folder: Path) -> None:
    """What `save_pretrained` writes (config, safetensors shards of at most 10 GB and their
    index), from `weights` rather than the model's own state dict, which holds only this
    process's shards under FSDP."""
    import json

    from diffusers.utils import SAFETENSORS_WEIGHTS_NAME
    from huggingface_hub import save_torch_state_dict
    from torch.distributed.fsdp import FSDPModule

    transformer.save_config(folder)
    # fully_shard made the class FSDP<Name>; from_pretrained and pipelines want Wan's own.
    config = json.loads((folder / "config.json").read_text())
    config["_class_name"] = next(c for c in type(transformer).__mro__ if not issubclass(c, FSDPModule)).__name__
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_torch_state_dict(weights, folder, filename_pattern=SAFETENSORS_WEIGHTS_NAME.replace(".safetensors",
                          "{suffix}.safetensors"), max_shard_size="10GB")


def encode_frames(pipe, frames):
    """uint8 frames (F, H, W, 3) to Wan's normalised latents (1, z, latent frames, h, w)."""
    import torch
    from diffusers.pipelines.wan.pipeline_wan_i2v import retrieve_latents

    vae = pipe.vae
    pixels = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0
    pixels = pixels.to(device=pipe._execution_device, dtype=vae.dtype)
    latent = retrieve_latents(vae.encode(pixels), sample_mode="argmax").float()
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(latent)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(latent)
    return (latent - mean) / std


def check_expert(config: VideoTrainConfig, present: list[str]) -> list[str]:
    """The experts to train, of those the base has (Wan2.2 A14B: high and low; one-transformer
    Wan models: high only, over every timestep)."""
    if config.expert == "both":
        return present
    if config.expert not in present:
        raise BadInput(f"--base {config.base} has one transformer (no low-noise expert): train it with --expert high")
    return [config.expert]


def check_context_parallel(config: VideoTrainConfig, heads: int, pixels: int) -> None:
    """`cp` above 1 splits every latent frame's tokens evenly over the group (diffusers'
    even split, which gloo's gather needs), and Ulysses hands each process heads/cp heads.
    `pixels`: the side of the square of pixels one token covers (VAE scale x patch)."""
    cp = config.cp
    if cp == 1:
        return
    tokens = (config.height // pixels) * (config.width // pixels)
    if tokens % cp:
        raise BadInput(f"cp: {cp} splits the video tokens evenly over {cp} processes, and {config.height}x"
                       f"{config.width} frames make {tokens} tokens per latent frame; choose a cp dividing {tokens}, "
                       f"or a size whose (height/{pixels})x(width/{pixels}) divides by {cp}")
    if heads % cp:
        raise BadInput(f"cp: {cp}: Ulysses context parallelism gives each of {cp} processes a share of the "
                       f"attention heads, and {config.base} has {heads}; choose a cp dividing {heads}")


def base_geometry(base: str) -> tuple[int, int] | None:
    """(attention heads, pixels per token side) of a base known before loading: the tiny
    preset or a local diffusers folder (None otherwise: checked once loaded)."""
    import json

    from cinema_cli.runtime.loading import local_folder

    if base == "tiny":
        from cinema_cli.runtime.tiny_wan import HEADS

        return HEADS, 16
    folder = local_folder(base)
    if folder is None:
        return None
    transformer = json.loads((folder / "transformer" / "config.json").read_text(encoding="utf-8"))
    vae = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
    return transformer.get("num_attention_heads", 40), vae.get("scale_factor_spatial", 8) * transformer.get(
        "patch_size", [1, 2, 2])[1]


def check_base(base: str, mode: str) -> list[str] | None:
    """A base of the wrong kind is refused before anything is written: scene mode trains a
    Wan text-to-video pipeline (HoloCine's Wan2.2-T2V-A14B), keyframes mode a Wan
    image-to-video one with mask/latent channels (Wan2.2-I2V-A14B). Checked from the
    configs of a local folder or cached hub id; an uncached hub id is checked on loading.
    Returns the experts the base has (None: not known before loading)."""
    import json

    from cinema_cli.runtime.loading import local_folder

    if base == "tiny":
        return ["high", "low"] if mode == "scene" else ["high"]
    folder = local_folder(base)
    if folder is None:
        return None
    want = PIPELINES[mode]
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        found = index.get("_class_name")
        transformer = json.loads((folder / "transformer" / "config.json").read_text(encoding="utf-8"))
        z = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8")).get("z_dim", 16)
    except (OSError, ValueError) as err:
        raise BadInput(f"--base {base}: not a diffusers Wan pipeline ({err})") from None
    i2v = transformer.get("in_channels") == 2 * z + 4 and transformer.get("image_dim") is None
    if found != want or (mode == "keyframes") != i2v:
        raise BadInput(f"--base {base}: a {found} with a transformer of {transformer.get('in_channels')} input "
                       f"channels; --mode {mode} trains a {want} ({'Wan2.2 I2V' if mode == 'keyframes' else 'Wan2.2 T2V'} "
                       "style, e.g. Wan-AI/Wan2.2-" + ("I2V" if mode == "keyframes" else "T2V") + "-A14B-Diffusers)")
    two = isinstance(index.get("transformer_2"), list) and index["transformer_2"][0] is not None
    return ["high", "low"] if two else ["high"]


def load_base(base: str, mode: str, dtype):
    """The Wan pipeline to train from: a diffusers folder or hub id, or the tiny preset
    (`tiny`: two-expert T2V for scene mode, I2V for keyframes mode)."""
    from cinema_cli.runtime.torch_compat import prepare_torch

    prepare_torch()
    if base == "tiny":
        from cinema_cli.runtime.tiny import build_tiny

        return build_tiny("wan", kind="t2v" if mode == "scene" else "i2v")
    import diffusers

    pipeline = getattr(diffusers, PIPELINES[mode])
    try:
        pipe = pipeline.from_pretrained(base, torch_dtype=dtype)
    except (OSError, ValueError) as err:
        raise BadInput(f"cannot load base model {base!r} as a {PIPELINES[mode]}: {err}") from None
    return pipe
