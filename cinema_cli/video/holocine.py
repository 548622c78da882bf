"""The `holocine` shot backend: HoloCine's released model renders each storyboard scene as
one multi-shot clip from text, then the clip is cut back into one MP4 per shot.

The model is Wan2.2-T2V-A14B (`model`: its diffusers pipeline, for the UMT5 encoder, the
VAE and the transformer configs) with HoloCine's fine-tuned DiTs in place of both experts
(`dit`: a folder or Hub id holding `<variant>_high_noise.safetensors` and
`<variant>_low_noise.safetensors`; `variant: full` is dense self-attention, `sparse` is
HoloCine's sparse inter-shot self-attention). The DiTs are converted to diffusers' layout
once and cached outside the project (`holocine_weights`). `model: tiny` is a tiny
two-expert T2V preset with random weights (with `dit:` empty, its own experts).

It is text-to-video: keyframes do not condition it (HoloCine has no image input). How a
scene becomes one prompt and one 4t+1-frame video is `holocine_prompt`; the denoising is
`holocine_denoise`. Shots are multiples of 4 frames. A group is a run of consecutive
shots of one scene whose video (1 + their frames) fits `max_frames` (HoloCine trained on
241 frames); a longer scene is split greedily at shot boundaries, each part a fresh clip.
`cinema eval cuts` on the film measures whether the cuts land where the storyboard says.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import Field

from cinema_cli.errors import BackendError, BadInput
from cinema_cli.project.schema import RuntimeSettings, Shot, Storyboard
from cinema_cli.runtime.inputs import ModelOption
from cinema_cli.runtime.loading import hub_offline, load_pretrained, local_folder, missing_folder, missing_weights
from cinema_cli.runtime.memory import SceneMemory, out_of_memory_is_a_message
from cinema_cli.runtime.parallel import lead, parallelize
from cinema_cli.runtime.profiles import Runtime, resolve_runtime
from cinema_cli.runtime.tiny import TINY, build_tiny
from cinema_cli.video.base import EncodeSettings, RenderPlan, SceneRequest, StepProgress, shot_backends
from cinema_cli.video.holocine_prompt import shot_frames
from cinema_cli.video.lora import (
    EXPERTS, VideoLoraOptions, config_transformers, load_loras, lora_files, pipeline_transformers, preflight_loras,
)
from cinema_cli.video.prompting import shot_prompt
from cinema_cli.video.wan_model import check_kind, write_video

DEFAULT_MODEL = "Wan-AI/Wan2.2-T2V-A14B-Diffusers"
DEFAULT_DIT = "hlwang06/HoloCine"
MULTIPLE = 16  # pixels: Wan's 8x VAE and 2x2 patches


class HolocineOptions(VideoLoraOptions, extra="forbid"):
    model: ModelOption = DEFAULT_MODEL  # Wan2.2 T2V A14B diffusers pipeline, or `tiny`
    dit: ModelOption | None = DEFAULT_DIT  # HoloCine's DiT files; empty with `model: tiny`: the preset's own
    variant: Literal["full", "sparse"] = "full"
    steps: int = Field(50, ge=1, le=200)  # HoloCine's default
    guidance: float = Field(5.0, ge=1.0, le=20.0)  # HoloCine's default; 1 = off
    negative_prompt: str = ""
    max_frames: int = Field(241, ge=9, le=1025)  # a group's whole video, 4t+1 frames
    attention: Literal["auto", "flash-varlen", "sdpa"] = "auto"  # the sparse variant's kernel


@shot_backends.register
class HolocineShots:
    name = "holocine"
    version = "1"
    Options = HolocineOptions
    uses_next_keyframe = False
    reads_keyframe = False  # text-to-video: a shot is made from the captions alone

    def __init__(self, options: HolocineOptions):
        self.options = options
        self._loaded: tuple[RuntimeSettings, Runtime, object] | None = None
        self._scene = None

    @classmethod
    def weights(cls, options: HolocineOptions) -> list[str]:
        """The Wan2.2 T2V pipeline and HoloCine's DiTs it loads: see runtime.inputs."""
        return [model for model in (options.model, options.dit) if model and model != TINY]

    @classmethod
    def input_files(cls, options: HolocineOptions) -> dict[str, Path]:
        """Its LoRA files (video.lora), hashed into every shot's recipe."""
        return lora_files(options, cls.name)

    def frames_for(self, requested: int) -> int:
        return shot_frames(requested)

    def groups(self, board: Storyboard, frames_of: Callable[[Shot], int] | None = None) -> list[list[str]]:
        """Consecutive shots of one scene, split where the video would pass max_frames."""
        frames_of = frames_of or (lambda shot: 0)
        groups: list[list[str]] = []
        used = 0
        for index, shot in enumerate(board.shots):
            frames = frames_of(shot)
            same_scene = index and shot.scene == board.shots[index - 1].scene
            if same_scene and 1 + used + frames <= self.options.max_frames:
                groups[-1].append(shot.id)
                used += frames
            else:
                groups.append([shot.id])
                used = frames
        return groups

    def preflight(self, plan: RenderPlan) -> list[str]:
        runtime, notices = resolve_runtime(plan.runtime, self.name)
        if runtime.quantize != "none":
            raise BadInput(f"{self.name}: runtime.quantize is not supported for HoloCine's DiTs yet; set "
                           "quantize: none (runtime.offload: model or group lowers the memory instead)")
        if plan.width % MULTIPLE or plan.height % MULTIPLE:
            raise BadInput(f"cinema.yaml: resolution: {plan.width}x{plan.height} cannot be made by holocine, whose "
                           f"frames are multiples of {MULTIPLE} pixels a side (HoloCine trained at 832x480)")
        longest = max(plan.frames, default=0)
        if 1 + longest > self.options.max_frames:
            raise BadInput(
                f"{self.name}: a shot of {longest} frames makes a {1 + longest}-frame video, over "
                f"video.options.max_frames ({self.options.max_frames}); shorten it or raise max_frames"
            )
        for model in self.weights(self.options):
            missing_folder(model, self.name)
            if local_folder(model) is None:
                if hub_offline():
                    raise missing_weights(model, self.name)
                notices.append(f"{self.name}: {model} is not in the local cache; it is downloaded on first use")
        preflight_loras(self.options, self.options.model, self.name, self._lora_targets)
        if notices and any("downloaded on first use" in n for n in notices):
            return notices
        config = self._transformer_config()
        if config is not None:  # each DiT file checked from its header: keys, shapes, T2V
            from cinema_cli.video.holocine_weights import check_file

            for path in self._dit_files().values():
                check_file(path, config, self.name)
        self._check_split(plan, runtime, config)
        return notices

    def _check_split(self, plan: RenderPlan, runtime: Runtime, config: dict | None) -> None:
        """Context parallelism that divides this scene's tokens, and (on CUDA, real weights)
        the memory of one GPU, or of each when the scene is split: see runtime.memory."""
        from cinema_cli.runtime.parallel import check_tokens, gpu_count, possible_degrees

        per_frame = (plan.height // MULTIPLE) * (plan.width // MULTIPLE)
        heads = config.get("num_attention_heads") if config else None
        check_tokens(plan.runtime.cp, per_frame, heads, self.name)
        scene = self.scene_memory(plan)
        if scene is None:
            return
        from cinema_cli.runtime.memory import check_fits, free_gpu_bytes

        check_fits(scene.size, runtime, scene.tokens, scene.pixels, free_gpu_bytes(), self.name,
                   plan.runtime.cp.degree, possible_degrees(plan.runtime.cp, per_frame, heads, gpu_count()))

    def scene_memory(self, plan: RenderPlan) -> SceneMemory | None:
        """The longest group's ask of a GPU, on CUDA with real weights already here."""
        runtime, _ = resolve_runtime(plan.runtime, self.name)
        if runtime.device != "cuda" or self.options.model == TINY or local_folder(self.options.model) is None:
            return None
        from cinema_cli.runtime.memory import SceneMemory, model_size

        per_frame = (plan.height // MULTIPLE) * (plan.width // MULTIPLE)
        tokens = (1 + max(plan.frames, default=0) // 4) * per_frame  # latent frames of the longest group
        return SceneMemory(plan.longest, model_size(self._base_folder()), runtime, tokens, plan.width * plan.height,
                           per_frame, (self._transformer_config() or {}).get("num_attention_heads"))

    # ------------------------------------------------------------ loading

    def _base_folder(self) -> Path | None:
        """The Wan2.2 T2V pipeline folder (None for the tiny preset); checked to be text-to-video."""
        if self.options.model == TINY:
            return None
        folder = local_folder(self.options.model)
        if folder is None:
            if hub_offline():
                raise missing_weights(self.options.model, self.name)
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(self.options.model))
        check_kind(folder, self.options.model, "t2v", self.name)
        return folder

    def _transformer_config(self) -> dict | None:
        """The experts' config HoloCine's DiTs must fit, or None when the preset's own are used."""
        if self.options.model == TINY:
            if not self.options.dit:
                return None
            return dict(build_tiny("wan", kind="t2v").transformer.config)
        import json

        folder = self._base_folder()
        return json.loads((folder / "transformer" / "config.json").read_text(encoding="utf-8"))

    def _lora_targets(self) -> dict | None:
        """The experts' Linear layers a LoRA must fit (None while the weights are not local)."""
        if self.options.model == TINY and not self.options.dit:
            return pipeline_transformers(build_tiny("wan", kind="t2v"))
        if any(local_folder(m) is None for m in (self.options.model, self.options.dit) if m and m != TINY):
            return None
        config = self._transformer_config()
        return config_transformers({component: config for component in EXPERTS.values()})

    def _dit_files(self) -> dict[str, Path]:
        from cinema_cli.video.holocine_weights import expert_files

        dit = self.options.dit
        if not dit:
            raise BadInput(f"{self.name}: video.options.dit names no HoloCine DiT files "
                           "(only `model: tiny` runs without)")
        folder = local_folder(dit)
        if folder is None:
            if hub_offline():
                raise missing_weights(dit, self.name)
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(dit, allow_patterns=[f"*{self.options.variant}_*_noise.safetensors"]))
        return expert_files(folder, self.options.variant, self.name)

    def _experts(self, runtime: Runtime) -> tuple[object, object] | None:
        config = self._transformer_config()
        if config is None:
            return None
        from diffusers import WanTransformer3DModel

        from cinema_cli.video.holocine_weights import EXPERTS, converted_folder

        files = self._dit_files()
        return tuple(  # type: ignore[return-value]
            WanTransformer3DModel.from_pretrained(str(converted_folder(files[e], config, self.name)),
                                                  torch_dtype=runtime.torch_dtype).eval()
            for e in EXPERTS
        )

    def pipeline(self, settings: RuntimeSettings) -> tuple[object, Runtime]:
        if self._loaded is None or self._loaded[0] != settings:
            from cinema_cli.runtime.loading import apply_profile
            from cinema_cli.runtime.torch_compat import prepare_torch

            prepare_torch()
            runtime, _ = resolve_runtime(settings, self.name)
            experts = self._experts(runtime)
            if self.options.model == TINY:
                pipe = build_tiny("wan", kind="t2v")
                if experts is not None:
                    pipe.transformer, pipe.transformer_2 = experts
                self._load_loras(pipe)
                if runtime.dtype != "float32":
                    pipe.to(dtype=runtime.torch_dtype)
                apply_profile(pipe, runtime)
            else:
                from diffusers import WanPipeline

                self._base_folder()
                pipe = load_pretrained(WanPipeline, self.options.model, runtime, self.name,
                                       before_profile=self._load_loras, transformer=experts[0],
                                       transformer_2=experts[1])
            self._install(pipe)
            parallelize(pipe, settings.cp, runtime.device, self.name)
            self._loaded = (settings, runtime, pipe)
        return self._loaded[2], self._loaded[1]

    def _load_loras(self, pipe) -> None:
        """Before the profile moves, offloads or compiles it: fused on the loaded weights."""
        load_loras(pipe, self.options, self.options.model, self.name)

    def _install(self, pipe) -> None:
        from cinema_cli.attention.processors import SceneAttention, install_scene_attention

        self._scene = SceneAttention()
        for name in ("transformer", "transformer_2"):
            install_scene_attention(getattr(pipe, name), self._scene)

    # ------------------------------------------------------------ rendering

    def render_group(
        self, request: SceneRequest, outs: list[Path], encode: EncodeSettings, progress: StepProgress
    ) -> None:
        from cinema_cli.video.holocine_denoise import SceneJob, denoise_scene
        from cinema_cli.video.scene_denoise import global_prompt

        lead(request.shots[0].runtime.cp, "render_group", request)
        pipe, runtime = self.pipeline(request.shots[0].runtime)
        first = request.shots[0]
        if any(shot.frames % 4 for shot in request.shots):
            raise BackendError(f"{self.name}: shot lengths must be multiples of 4 frames")
        job = SceneJob(
            global_caption=global_prompt(request),
            shot_captions=tuple(shot_prompt(s.caption, s.framing, s.move) for s in request.shots),
            shot_frames=tuple(s.frames for s in request.shots), width=first.width, height=first.height,
            seed=first.seed, steps=self.options.steps, guidance=self.options.guidance,
            negative_prompt=self.options.negative_prompt, sparse=self.options.variant == "sparse",
            kernel=self.options.attention,
        )
        shots = ", ".join(s.shot_id for s in request.shots)
        with out_of_memory_is_a_message(runtime, self.name, f"scene {request.scene_id} ({shots})"):
            videos = denoise_scene(pipe, self._scene, job, progress)
        for shot, out, video in zip(request.shots, outs, videos):
            write_video(video, out, shot.fps, encode, shot.frames, self.name)
