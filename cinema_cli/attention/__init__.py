"""Attention for multi-shot video: where each shot's tokens lie (layout), the sparse
kernels that use it (sparse, kernels), and the processors that put them inside diffusers'
WanTransformer3DModel (processors). `reference` is the dense masked version, for tests."""
