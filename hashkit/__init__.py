"""hashkit: deep hashing for image retrieval — one CLI, shared data, backbones and evaluator."""

__version__ = "0.1.0"


def load(checkpoint, device=None, gpu=None):
    """Load a checkpoint for encoding images: ``hashkit.load(path).encode(images)`` (see hashkit.api)."""
    from hashkit.api import load as _load

    return _load(checkpoint, device=device, gpu=gpu)
