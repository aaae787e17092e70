"""Trainer, checkpoints, distributed helpers, logging."""
