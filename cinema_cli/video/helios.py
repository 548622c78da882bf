"""The `helios` shot backend: Helios (diffusers' HeliosPipeline), an autoregressive video
model that makes a shot chunk by chunk, each chunk continuing from a multi-scale history
of earlier latent frames (long 4x-compressed, mid 2x, short 1x) — the causal model of
`cinema direct`.

As a `CausalShotBackend` it continues a film: `render_next` makes a shot from the
film's latent history with the shot's own prompt (the prompt changes at the cut), its
keyframe (when the file exists) conditioning the first chunk as Helios's image input
does, and reports which past frames filled the history slots (`Routing`). Which frames
those are is `memory`: `camr` routes them by the new chunk's attention (video.camr),
`recency` takes the newest (Helios's own window), `full` hands it the whole growing
history (a baseline: memory and time grow with the film). As a plain `ShotBackend`,
`render` is a shot continuing from an empty history.

The denoising of a chunk is the pipeline's own (video.helios_chunks), with its text
encoder, transformer, scheduler and VAE; only the choice of history frames is ours. A
shot is a whole number of chunks: (chunk - 1) x 4 + 1 frames each, as the pipeline
decodes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from cinema_cli.assemble.ffmpeg import VideoWriter
from cinema_cli.errors import BackendError, BadInput
from cinema_cli.project.schema import RuntimeSettings
from cinema_cli.runtime.inputs import ModelOption
from cinema_cli.runtime.loading import load_pretrained, preflight_weights
from cinema_cli.runtime.memory import out_of_memory_is_a_message
from cinema_cli.runtime.profiles import Runtime, resolve_runtime
from cinema_cli.runtime.tiny import TINY, build_tiny
from cinema_cli.video.base import EncodeSettings, RenderPlan, ShotRequest, StepProgress, shot_backends
from cinema_cli.video.causal import LatentHistory, Routing

DEFAULT_MODEL = "BestWishYsh/Helios-Base"
MULTIPLE = 16  # pixels a side: the VAE's 8x and the 2x2 patch (the pipeline's own check)
TEMPORAL = 4  # video frames per latent frame (Wan's VAE)


class HeliosOptions(BaseModel, extra="forbid"):
    # A Hugging Face id, a local folder with a diffusers Helios pipeline, or `tiny`.
    model: ModelOption = DEFAULT_MODEL
    steps: int = Field(50, ge=1, le=200)
    guidance: float = Field(5.0, ge=1.0, le=20.0)  # classifier-free guidance; 1 = off
    negative_prompt: str = ""
    memory: Literal["camr", "recency", "full"] = "camr"
    # The history slots (latent frames): long (4x compressed), mid (2x), short (1x). Their
    # sum is the bounded memory a chunk sees; Helios trained with 16, 2, 1.
    history: tuple[int, int, int] = (16, 2, 1)
    chunk: int = Field(9, ge=1, le=64)  # latent frames per chunk (9: 33 video frames)
    # CAMR's probe: the self-attention layers it reads (shallow layers are cheap, since the
    # probe stops after the deepest; the first is exact), the chunk queries it samples, and
    # candidate frames per probe pass (the probe's memory).
    probe_layers: tuple[int, ...] = (0, 1)
    probe_queries: int = Field(256, ge=1, le=65536)
    probe_group: int = Field(8, ge=1, le=256)

    @field_validator("history")
    @classmethod
    def _history(cls, sizes: tuple[int, int, int]) -> tuple[int, int, int]:
        if sizes[0] < 0 or sizes[1] < 0 or sizes[2] < 1:
            raise ValueError("history is [long, mid, short] latent frames, short at least 1, none negative")
        return sizes

    @field_validator("probe_layers")
    @classmethod
    def _layers(cls, layers: tuple[int, ...]) -> tuple[int, ...]:
        if not layers or min(layers) < 0:
            raise ValueError("probe_layers lists at least one layer index (0 = the first)")
        return tuple(sorted(set(layers)))


@shot_backends.register
class HeliosShots:
    name = "helios"
    version = "1"
    Options = HeliosOptions
    uses_next_keyframe = False

    def __init__(self, options: HeliosOptions):
        self.options = options
        self._loaded: tuple[RuntimeSettings, Runtime, object] | None = None

    @classmethod
    def weights(cls, options: HeliosOptions) -> list[str]:
        """The pretrained pipeline it loads (none for the tiny preset): see runtime.inputs."""
        return [] if options.model == TINY else [options.model]

    @property
    def window(self) -> int:
        """Video frames per chunk."""
        return (self.options.chunk - 1) * TEMPORAL + 1

    def frames_for(self, requested: int) -> int:
        return self.window * max(1, round(requested / self.window))

    def preflight(self, plan: RenderPlan) -> list[str]:
        runtime, notices = resolve_runtime(plan.runtime, self.name)
        _require_helios(self.name)
        if plan.width % MULTIPLE or plan.height % MULTIPLE:
            fit = f"{plan.width // MULTIPLE * MULTIPLE}x{plan.height // MULTIPLE * MULTIPLE}"
            raise BadInput(f"cinema.yaml: resolution: {plan.width}x{plan.height} cannot be made by helios, whose "
                           f"frames are multiples of {MULTIPLE} pixels a side; use e.g. {fit}")
        if self.options.memory == "full":
            notices.append(f"{self.name}: memory: full hands the model the whole film as history, so its memory "
                           "and time grow with the film (a baseline); memory: camr keeps them bounded")
        folder = preflight_weights(self.options.model, runtime, self.name, notices)
        if folder is not None:
            self._check_layers(_layers_of(folder, self.name))
        elif self.options.model == TINY:
            from cinema_cli.runtime.tiny_helios import TINY_TRANSFORMER

            self._check_layers(TINY_TRANSFORMER["num_layers"])
        return notices

    def _check_layers(self, layers: int) -> None:
        if self.options.memory == "camr" and max(self.options.probe_layers) >= layers:
            raise BadInput(f"{self.name}: video.options.probe_layers {list(self.options.probe_layers)} must be "
                           f"below {layers}, the number of layers of {self.options.model}")

    def pipeline(self, settings: RuntimeSettings) -> tuple[object, Runtime]:
        """The loaded pipeline and the runtime it runs with (loaded on first use)."""
        if self._loaded is None or self._loaded[0] != settings:
            runtime, _ = resolve_runtime(settings, self.name)
            _require_helios(self.name)
            if self.options.model == TINY:
                from cinema_cli.runtime.loading import apply_profile

                pipe = build_tiny("helios")
                if runtime.dtype != "float32":
                    pipe.to(dtype=runtime.torch_dtype)
                apply_profile(pipe, runtime)
            else:
                from cinema_cli.runtime.torch_compat import prepare_torch

                prepare_torch()
                import diffusers

                pipe = load_pretrained(diffusers.HeliosPipeline, self.options.model, runtime, self.name)
            self._check_layers(len(pipe.transformer.blocks))
            self._loaded = (settings, runtime, pipe)
        return self._loaded[2], self._loaded[1]

    # ------------------------------------------------------------ rendering

    def render(self, request: ShotRequest, out: Path, encode: EncodeSettings, progress: StepProgress) -> None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="cinema-helios-") as empty:
            self.render_next(request, True, LatentHistory(Path(empty)), out, encode, progress)

    def render_next(self, request: ShotRequest, cut: bool, history: LatentHistory, out: Path,
                    encode: EncodeSettings, progress: StepProgress) -> tuple[Routing, object]:
        """Write the shot to `out` and return its routing (of its first chunk, the one
        that crosses from the past) and its latents [C, T, h, w]; `history` is only read."""
        from cinema_cli.video.helios_shot import ShotMaker

        pipe, runtime = self.pipeline(request.runtime)
        if request.width % MULTIPLE or request.height % MULTIPLE:
            raise BadInput(f"{self.name}: {request.width}x{request.height} is not a multiple of {MULTIPLE} a side")
        maker = ShotMaker(pipe, self.options, request, cut, history, self.name)
        chunks = -(-request.frames // self.window)
        done = [0]

        def step(i: int) -> None:
            done[0] += 1
            progress(done[0], chunks * self.options.steps)

        with out_of_memory_is_a_message(runtime, self.name, f"shot {request.shot_id}"):
            with VideoWriter(out, request.width, request.height, request.fps, encode) as writer:
                left = request.frames
                for _ in range(chunks):
                    frames = maker.next_chunk(step)
                    for frame in frames[:left]:
                        writer.write(_to_uint8(frame))
                    left -= min(left, len(frames))
        if left:
            raise BackendError(f"{self.name}: the model made fewer frames than the {request.frames} asked for")
        return maker.routings[0], maker.shot_latents()


def _to_uint8(frame):
    import numpy as np

    return (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _require_helios(who: str) -> None:
    """HeliosPipeline is recent in diffusers; an older one is a message, not a traceback."""
    from cinema_cli.runtime.torch_compat import prepare_torch

    prepare_torch()
    import diffusers

    if not hasattr(diffusers, "HeliosPipeline"):
        raise BackendError(f"{who}: diffusers {diffusers.__version__} has no HeliosPipeline; "
                           "pip install 'diffusers>=0.42,<0.43' (the version cinema is tested with)")


def _layers_of(folder: Path, who: str) -> int:
    import json

    path = folder / "transformer" / "config.json"
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["num_layers"])
    except (OSError, ValueError, KeyError) as err:
        raise BadInput(f"{who}: cannot read the number of layers from {path}: {err}") from err

