"""``genrestream export``: the model of a training run, by the run's ``report.json`` (musicnn or the 57-feature MLP)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch on the ``model_name`` of ``--model-dir``'s report (default ``./artifacts``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    model_dir = Path("artifacts")
    for i, arg in enumerate(argv):
        if arg == "--model-dir" and i + 1 < len(argv):
            model_dir = Path(argv[i + 1])
        elif arg.startswith("--model-dir="):
            model_dir = Path(arg.split("=", 1)[1])
    name = None
    report = model_dir / "report.json"
    if report.is_file() and "--keras" not in argv:
        try:
            name = json.loads(report.read_text()).get("model_name")
        except (OSError, ValueError):
            name = None
    if name == "musicnn-msd":
        from export.musicnn_model import main as export_musicnn

        return export_musicnn(argv)
    from export.onnx_export import main as export_mlp

    return export_mlp(argv)
