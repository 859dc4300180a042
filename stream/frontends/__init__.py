"""Frontends: what the model sees of the audio.

A frontend turns mono samples at the model's sample rate into the model's
input, one window at a time. Each comes in two forms with the same windows:
a batch function of one window (what training computes, the reference) and an
incremental extractor per stream (what the engine runs: each frame computed
once, a hop costs work in proportion to the hop).

- :mod:`stream.frontends.gtzan`: the 57 GTZAN features (Kaggle table layout)
  of a 10 s window at 22050 Hz; incremental in
  :mod:`stream.frontends.gtzan_incremental`.
- :mod:`stream.frontends.windowing`: the reference extractor, the batch
  function on the whole window every hop.
"""
