"""genrestream's serving side: sources, features, inference, smoothing, events.

Nothing here imports TensorFlow, ``training`` or ``export``.
"""

__version__ = "0.1.0"
