"""The aesthetic filter: `eval aesthetic`'s LAION predictor over each keyframe's CLIP
features, set up from a dataset's `filters.aesthetic` (paths relative to the dataset).

The scores are a step of their own (keyed by the keyframes, the predictor file's hash and
the CLIP's identity); the threshold is the filters step's, so changing `min_score`
re-judges the stored scores without running a model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cinema_cli.data.config import AestheticSettings
from cinema_cli.errors import BadInput
from cinema_cli.eval.aesthetic import AestheticPredictor, scores
from cinema_cli.eval.features import Cache, load_clip
from cinema_cli.project.manifest import FileHasher

WHERE = "dataset.yaml filters.aesthetic"


class AestheticScorer:
    def __init__(self, settings: AestheticSettings, root: Path, device: str = "auto") -> None:
        local = (root / Path(settings.weights).expanduser())
        try:
            self.predictor = AestheticPredictor(str(local) if local.is_file() else settings.weights)
            self.clip = load_clip(settings.clip_model, settings.clip_weights, root, device, Cache(None, None))
        except BadInput as err:
            raise BadInput(f"{WHERE}: {err}") from None
        self._check_width(settings.clip_model)
        self.identity = {"predictor": FileHasher()(self.predictor.path), "clip": self.clip.identity}

    def _check_width(self, model: str) -> None:
        """The predictor must fit the CLIP's feature width; said before any film is touched."""
        from cinema_cli.memory.weights import open_clip_module

        config = open_clip_module().get_model_config(model)
        width = (config or {}).get("embed_dim")
        if width is not None and width != self.predictor.input_width:
            raise BadInput(f"{WHERE}: the predictor takes {self.predictor.input_width}-wide CLIP features, but "
                           f"{model} gives {width}: set clip_model/clip_weights to the CLIP it was trained on "
                           "(ViT-L-14 / openai for LAION's predictor)")

    def __call__(self, images: list[np.ndarray]) -> list[float]:
        return [round(float(s), 4) for s in scores(self.predictor, self.clip, images)] if images else []
