"""mribench: a longitudinal benchmark suite for self-supervised brain-MRI encoders."""

__version__ = "0.1.0"
