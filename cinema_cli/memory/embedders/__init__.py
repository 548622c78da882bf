"""Embedders: how relevant each remembered frame is to the shot being drawn."""
