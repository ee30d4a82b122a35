"""modscope: a keyboard-driven terminal debugger for the insides of PyTorch modules."""

__version__ = "0.1.0"
