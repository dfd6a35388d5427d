"""ELECTRA pre-training, fine-tuning and serving in PyTorch."""

__version__ = "0.1.0"
