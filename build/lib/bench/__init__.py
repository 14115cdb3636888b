"""medbench: benchmark CNN architectures on medical images."""

__version__ = "0.1.0"
