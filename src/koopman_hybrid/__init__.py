"""Koopman hybrids: replace a layer of a trained MLP by a DMD-fitted linear operator."""

__version__ = "0.1.0"
