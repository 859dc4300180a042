"""``genrestream train``: the musicnn model's heads (the default) or the 57-feature MLP (``--model gtzan-mlp``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

MODELS = ("musicnn-msd", "gtzan-mlp")


def _model_option(argv: list[str]) -> tuple[str | None, list[str]]:
    """The value of ``--model`` and the other arguments."""
    rest, model, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--model" and i + 1 < len(argv):
            model, i = argv[i + 1], i + 2
            continue
        if arg.startswith("--model="):
            model = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return model, rest


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch on ``--model`` (default: the shipped default model)."""
    from stream.model import DEFAULT_MODEL_NAME

    model, rest = _model_option(list(sys.argv[1:] if argv is None else argv))
    model = model or DEFAULT_MODEL_NAME
    if model == "gtzan-mlp":
        from training.train import main as train_mlp

        return train_mlp(rest)
    if model == "musicnn-msd":
        from training.musicnn_train import main as train_musicnn

        return train_musicnn(rest)
    print(f"genrestream train: --model {model!r}: expected one of {', '.join(MODELS)}", file=sys.stderr)
    return 2
