"""Training of the genrestream genre classifier (needs the ``train`` extra: TensorFlow, Keras 3).

- :mod:`training.data`: feature tables (Kaggle GTZAN layout) and tables computed from audio folders.
- :mod:`training.splits`: validation folds by track and by blocks of consecutive tracks.
- :mod:`training.model`: the Keras model (standardisation inside the model).
- :mod:`training.train`: cross-validated training, the final fit, the report, the CLI.

Serving (``stream/``) never imports this package.
"""
