"""genrestream's serving side: sources, frontends, inference, smoothing, events, servers.

Nothing here imports TensorFlow, ``training`` or ``export``.
"""

__version__ = "0.1.0"
