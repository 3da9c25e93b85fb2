"""electrolite: pre-train compact text encoders with ELECTRA, ALBERT and BERT objectives."""

__version__ = "0.1.0"
