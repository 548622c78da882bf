"""Keyframe memory: which earlier keyframes condition a new one, and at what size.

goldenmem (the size schedule and its token bound), candidates (what can be remembered),
embedders/ (relevance: lexical, clip, text), signature (near-duplicate pictures),
index (embeddings remembered by content hash), select (ranking and the chosen subset),
weights (finding open_clip weights offline), planner (all of it for one project's shot).
Pure torch/numpy: no diffusers, nothing printed.
"""
