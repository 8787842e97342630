"""Evaluation: perplexity and retrieval at chosen block scorers and policies."""
