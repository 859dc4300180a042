"""Frontends: what the model sees of the audio.

A frontend turns mono samples at the model's sample rate into the model's
input, one window at a time, in two forms with the same windows: a batch
function of one window (what training computes, the reference) and an
incremental extractor per stream (what the engine runs: each frame computed
once, a hop costs work in proportion to the hop).

- :mod:`stream.frontends.gtzan`: the 57 GTZAN features (Kaggle table layout)
  of a 10 s window at 22050 Hz; incremental in
  :mod:`stream.frontends.gtzan_incremental`.
- :mod:`stream.frontends.logmel`: musicnn's log-mel patches (96 bands,
  187 frames of 16 ms at 16 kHz), incremental too.
- :mod:`stream.frontends.windowing`: the reference extractor (a frontend's
  batch function on the whole window every hop) and the window RMS the engine
  calls silence by.

Every frontend object has ``name``, ``version``, ``sample_rate``,
``window_length`` (samples), ``window_s``, ``input_name`` and
``input_shape`` (of one window), ``min_samples``, and ``params()``,
``from_params(params, source)``, ``snap_hop(hop_length)``,
``window_input(y)`` and ``extractor(hop_length)``. An extractor has
``push(block) -> [(end_sample, x)]``, ``reset()``, ``samples_seen`` and
``nbytes``. The model names its frontend, with every parameter, in its
metadata; :func:`frontend_from_params` rebuilds it or refuses.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, Mapping

FRONTENDS: dict[str, str] = {
    "genrestream.gtzan57": "stream.frontends.gtzan:GtzanFrontend",
    "musicnn-logmel": "stream.frontends.logmel:LogMelFrontend",
}
"""Frontend name → ``module:class`` of every frontend this genrestream computes."""


def frontend_class(name: str, source: str = "model") -> type:
    """The class of the frontend called ``name``.

    Raises
    ------
    ValueError
        If no frontend has that name; the message names ``source`` and the
        known frontends.
    """
    target = FRONTENDS.get(name) if isinstance(name, str) else None
    if target is None:
        raise ValueError(
            f"{source}: frontend {name!r} is not one this genrestream computes (known: {', '.join(sorted(FRONTENDS))})"
        )
    module, cls = target.split(":")
    return getattr(import_module(module), cls)


def frontend_from_params(params: Mapping[str, Any], source: str = "model") -> Any:
    """Rebuild the frontend a model's metadata describes (``name``, ``version`` and every parameter).

    Parameters
    ----------
    params : mapping
        The model's ``frontend`` metadata.
    source : str
        The model's path, for error messages.

    Raises
    ------
    ValueError
        If the name is unknown, the version or a parameter differs from what
        this code computes, or a parameter is missing.
    """
    if not isinstance(params, Mapping) or "name" not in params:
        raise ValueError(f"{source}: the model's frontend metadata has no 'name'")
    cls = frontend_class(params["name"], source)
    try:
        return cls.from_params(dict(params))
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{source}: {exc}") from exc
