"""aloekit: build Aloe-style healthcare LLMs with one recipe and one CLI."""

__version__ = "0.1.0"
