"""Training: one loop (loop.py) over accelerate, one small protocol per model family
(keyframes.py for the interleaved keyframe model), configs as validated pydantic models
saved with each run (config.py), one place that builds the Accelerator (engine.py)."""
