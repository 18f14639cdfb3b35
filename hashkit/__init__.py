"""hashkit: deep hashing for image retrieval — one CLI, shared data, backbones and evaluator."""

__version__ = "0.1.0"
