"""The version of msaf_hf (one definition: `msaf_hf.__version__` and the exported configs read it)."""

__version__ = "0.1.0"
