"""Denoising the shots of one scene jointly (keyframe-scene) on a Wan image-to-video
model; `cinema train video --mode keyframes` trains with this same conditioning.

The scene is one latent video: each shot's latent frames in turn (a shot of 4k+1 frames
is k+1 latent frames, its first latent holding its first frame alone, as Wan's causal
VAE encodes a clip). The transformer sees them all at once, with the scene processors
installed: sparse inter-shot self-attention over the video tokens and window
cross-attention over the hierarchical prompt.

Conditioning: Wan's image-to-video mask/latent channels. For each shot, the condition is
what the I2V pipeline builds for a clip starting on its keyframe (mask 1 on the first
frame, the keyframe's VAE latents), so the known frames sit at each shot's start, inside
the sequence. On top, each shot's first latent frame is anchored to its keyframe's latent
through the prediction (`wan_model.anchor_prediction`), which holds for the real
checkpoints' UniPC as for Euler, so each shot starts exactly on its keyframe (up to the
VAE). VACE would also condition frames inside a sequence, but it is a separate model family;
the mask/latent path works with the I2V checkpoints that the `wan` backend
already uses (and Wan2.2 A14B's two experts).

Prompt parts are encoded separately (the global part, then each shot's), so a shot's
text embedding does not depend on another shot's prompt, and zero-padded to Wan's 512
tokens as Wan pads every prompt (its cross-attention has no mask, so the padding tokens
are keys the model was trained with); window cross-attention keeps each shot's video
tokens to the global part, its own and the padding. The negative prompt is encoded as
Wan encodes it.
"""

from __future__ import annotations

import numpy as np
import torch

from cinema_cli.attention.layout import PromptLayout, ShotLayout
from cinema_cli.attention.processors import SceneAttention
from cinema_cli.errors import BadInput
from cinema_cli.video.base import SceneRequest, StepProgress
from cinema_cli.video.prompting import shot_prompt
from cinema_cli.video.wan_model import anchor_prediction, decode, latent_frames, on_path, read_image

TEXT_TOKENS = 512  # Wan pads every prompt to this many tokens


def global_prompt(request: SceneRequest) -> str:
    """The scene-wide part of the hierarchical prompt: place and time, cast, style."""
    parts = [f"{request.location}, {request.time_of_day}."]
    if request.description:
        parts.append(request.description)
    if request.cast:
        parts.append("Characters: " + "; ".join(f"{n}: {d}" if d else n for n, d in request.cast) + ".")
    if request.style:
        parts.append(f"Style: {request.style}.")
    return " ".join(parts)


def encode_parts(pipe, texts: list[str], device, dtype) -> tuple[torch.Tensor, list[int]]:
    """Each text encoded on its own and cut to its real tokens, all joined in order and
    zero-padded to 512 tokens: (1, 512, width), and each part's length."""
    tokens = pipe.tokenizer(
        texts, padding="longest", max_length=512, truncation=True, add_special_tokens=True,
        return_attention_mask=True, return_tensors="pt",
    )
    mask = tokens.attention_mask
    hidden = pipe.text_encoder(tokens.input_ids.to(device), mask.to(device)).last_hidden_state
    lengths = [int(n) for n in mask.sum(dim=1)]
    joined = torch.cat([hidden[i, :n] for i, n in enumerate(lengths)])
    if len(joined) > TEXT_TOKENS:
        raise BadInput(f"the scene's prompts are {len(joined)} tokens; the model reads {TEXT_TOKENS}: shorten them")
    padded = torch.zeros((1, TEXT_TOKENS, joined.shape[1]), dtype=joined.dtype, device=joined.device)
    padded[0, : len(joined)] = joined
    return padded.to(dtype), lengths


def check_model(pipe, who: str) -> None:
    config = pipe.transformer.config
    mask_and_latents = 2 * pipe.vae.config.z_dim + pipe.vae_scale_factor_temporal
    if config.image_dim is not None or config.in_channels != mask_and_latents:
        raise BadInput(
            f"{who}: scene mode needs a Wan image-to-video model with mask/latent conditioning and "
            "no CLIP image encoder (Wan2.2 I2V style, e.g. Wan-AI/Wan2.2-I2V-A14B-Diffusers); "
            "this one is not (set video.options.model)"
        )


def scene_conditions(pipe, request: SceneRequest, who: str) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The scene's initial noise and its I2V condition (each shot's, joined along time),
    and each shot's latent frames. Each shot's noise is drawn from its seed on the CPU."""
    device = pipe._execution_device
    width, height = request.shots[0].width, request.shots[0].height
    z = pipe.vae.config.z_dim
    lat_h, lat_w = height // pipe.vae_scale_factor_spatial, width // pipe.vae_scale_factor_spatial
    noises, conditions, frames = [], [], []
    for shot in request.shots:
        frames.append(latent_frames(shot.frames))
        image = read_image(shot.keyframe, width, height, who)
        noise = torch.randn((1, z, frames[-1], lat_h, lat_w), generator=torch.Generator().manual_seed(shot.seed))
        noises.append(noise.to(device))
        conditions.append(shot_condition(pipe, image, width, height, shot.frames))
    return torch.cat(noises, dim=2), torch.cat(conditions, dim=2), frames


def shot_condition(pipe, image, width: int, height: int, frames: int) -> torch.Tensor:
    """The I2V condition of a clip of `frames` frames opening on `image`: the mask of known
    frames (the first) and their VAE latents, as Wan's image-to-video pipeline builds it.
    `cinema train video --mode keyframes` conditions each shot with this same function."""
    device = pipe._execution_device
    z = pipe.vae.config.z_dim
    lat_h, lat_w = height // pipe.vae_scale_factor_spatial, width // pipe.vae_scale_factor_spatial
    pixels = pipe.video_processor.preprocess(image, height=height, width=width).to(device, torch.float32)
    placeholder = torch.zeros((1, z, latent_frames(frames), lat_h, lat_w), device=device)
    _, condition = pipe.prepare_latents(pixels, 1, z, height, width, frames, torch.float32, device, None, placeholder)
    return condition


def prompt_layout(lengths: list[int]) -> PromptLayout:
    """Where the global part and each shot's part lie in the 512 prompt tokens (encode_parts);
    every shot also sees the zero padding after them, as Wan's unmasked cross-attention does."""
    parts = PromptLayout.from_lengths(lengths[0], lengths[1:])
    return PromptLayout(parts.global_run, parts.shot_runs, TEXT_TOKENS, ((parts.length, TEXT_TOKENS),))


def denoise_scene(
    pipe, request: SceneRequest, scene: SceneAttention, steps: int, guidance: float, negative_prompt: str,
    summary_frames: int, kernel: str, progress: StepProgress, who: str,
) -> list[np.ndarray]:
    """Frames in [0, 1] of each shot of the scene, (frames, height, width, 3) each."""
    check_model(pipe, who)
    device = pipe._execution_device
    model_dtype = pipe.transformer.dtype
    with torch.no_grad():
        latents, condition, frames = scene_conditions(pipe, request, who)
        starts = np.cumsum([0, *frames])
        # Each shot's clean first latent is its keyframe's: the condition's latent channels there.
        mask_channels = pipe.vae_scale_factor_temporal
        anchors = [(int(s), condition[:, mask_channels:, s:s + 1]) for s in starts[:-1]]

        texts = [global_prompt(request)] + [shot_prompt(s.caption, s.framing, s.move) for s in request.shots]
        prompt, lengths = encode_parts(pipe, texts, device, model_dtype)
        negative = None
        if guidance > 1.0:
            negative, _ = pipe.encode_prompt(negative_prompt, do_classifier_free_guidance=False,
                                             max_sequence_length=TEXT_TOKENS, device=device, dtype=model_dtype)

        _, patch_h, patch_w = pipe.transformer.config.patch_size
        lat_h, lat_w = latents.shape[-2:]
        scene.shots = ShotLayout.from_frames(frames, (lat_h // patch_h) * (lat_w // patch_w), summary_frames)
        scene.kernel = kernel
        prompts = prompt_layout(lengths)

        scheduler = pipe.scheduler
        scheduler.set_timesteps(steps, device=device)
        # Each shot's first frame starts on its path to the keyframe's latent.
        for start, clean in anchors:
            first = latents[:, :, start:start + 1]
            latents[:, :, start:start + 1] = on_path(clean.to(first), first, float(scheduler.sigmas[0]))
        boundary = None
        if pipe.config.boundary_ratio is not None:  # Wan2.2 A14B: a second expert for low noise
            boundary = pipe.config.boundary_ratio * scheduler.config.num_train_timesteps
        try:
            for index, t in enumerate(scheduler.timesteps):
                model = pipe.transformer_2 if boundary is not None and t < boundary else pipe.transformer
                inputs = torch.cat([latents, condition], dim=1).to(model_dtype)
                timestep = t.expand(latents.shape[0])
                scene.prompts = prompts
                prediction = model(hidden_states=inputs, timestep=timestep, encoder_hidden_states=prompt,
                                   return_dict=False)[0]
                if negative is not None:
                    scene.prompts = None  # the negative prompt is one plain prompt for every shot
                    unconditional = model(hidden_states=inputs, timestep=timestep, encoder_hidden_states=negative,
                                          return_dict=False)[0]
                    prediction = unconditional + guidance * (prediction - unconditional)
                sigma = float(scheduler.sigmas[index])
                for start, clean in anchors:
                    prediction = anchor_prediction(prediction, latents, start, clean, sigma)
                latents = scheduler.step(prediction, t, latents, return_dict=False)[0]
                progress(index + 1, steps)
        finally:
            scene.shots = scene.prompts = None
        return [decode(pipe, latents[:, :, a:b]) for a, b in zip(starts[:-1], starts[1:])]
