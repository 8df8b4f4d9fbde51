"""Depth Anything V2 (ViT-S/B/L + DPT head), loaded strictly from a local official checkpoint."""
