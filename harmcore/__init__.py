"""harmcore: find, prune and measure the weights an LLM uses to generate harmful content."""

__version__ = "0.1.0"
