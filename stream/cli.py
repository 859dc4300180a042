"""The ``genrestream`` command.

``run``, ``classify`` and ``devices`` live here; ``train`` and ``export`` are
registered by the training and export packages under the entry-point group
``genrestream.commands`` (so serving never imports TensorFlow, nor even the
code that would).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from importlib.metadata import entry_points
from typing import Sequence

log = logging.getLogger("genrestream")

PLUGIN_GROUP = "genrestream.commands"

PLUGIN_EXTRAS = {"train": "train", "export": "train", "cluster": "cluster", "dashboard": None}
"""The extra each plug-in command needs (``pip install -e ".[EXTRA]"``); None: none."""

CONTROL_TOKEN_ENV = "GENRESTREAM_CONTROL_TOKEN"


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose >= 0 else logging.WARNING
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _unique_ids(specs: Sequence[str], names: Sequence[str], taken: Sequence[str] = ()) -> list[str]:
    from .sources import stream_id_for

    if len(names) > len(specs):
        raise SystemExit(f"genrestream run: {len(names)} --name given for {len(specs)} sources")
    ids: list[str] = []
    reserved = set(taken)
    for i, spec in enumerate(specs):
        base = names[i] if i < len(names) else stream_id_for(spec)
        candidate, k = base, 2
        while candidate in ids or candidate in reserved:
            candidate, k = f"{base}-{k}", k + 1
        ids.append(candidate)
    return ids


async def _run(args: argparse.Namespace) -> int:
    from .engine import Engine
    from .model import GenreModel
    from .publishers import JsonLinesPublisher, RedisPublisher
    from .server import EventServer
    from .sources import SourceError, open_source

    model = GenreModel(args.model)
    engine = Engine(model, hop_s=args.hop_s, realtime=args.realtime, feature_processes=args.feature_processes,
                    profile=args.profile)
    log.info("model %s: %d genres, window %.3f s, hop %.3f s (the frontend's grid), smoothing %s", model.info.tag,
             len(model.labels), model.info.window_s, engine.hop_s, args.profile)
    if args.jsonl:
        engine.publishers.append(JsonLinesPublisher(sys.stdout))
    if args.redis_url:
        engine.publishers.append(RedisPublisher(args.redis_url, metrics=engine.metrics))
    if not args.no_server:
        engine.publishers.append(
            EventServer(engine.states, args.host, args.port, registry=engine.metrics.registry,
                        on_control=(lambda request: _control(engine, request, allow_files=args.control_allow_files))
                        if args.control else None,
                        control_token=args.control_token if args.control else None)
        )
    configured: dict = {}
    if args.config:
        from .config import load_config

        configured = load_config(args.config)
        for cfg in configured.values():
            engine.add(cfg.open(), cfg.name)

    failed_at_start = 0
    for spec, stream_id in zip(args.sources, _unique_ids(args.sources, args.name, taken=list(configured))):
        try:
            engine.add(
                open_source(
                    spec, loop=args.loop, stall_timeout_s=args.stall_timeout_s, max_backoff_s=args.max_backoff_s,
                    max_reconnects=args.max_reconnects, reconnect_at_start=args.reconnect_at_start,
                ),
                stream_id,
            )
        except SourceError as exc:
            log.error("%s", exc)
            failed_at_start += 1
    forever = bool(args.config or args.control)
    if not engine.stream_ids and not forever:
        return 2

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, engine.stop)
        except (NotImplementedError, RuntimeError):
            pass
    for publisher in engine.publishers:
        await publisher.start()
    watchers = []
    hup: list[asyncio.Event] = []
    if args.config:
        reload_now = asyncio.Event()
        watchers.append(asyncio.create_task(
            _watch_config(engine, args.config, configured, args.config_poll_s, reload_now)))
        hup.append(reload_now)
    reload_model = asyncio.Event()
    watchers.append(asyncio.create_task(_reload_model_on(engine, args.model, reload_model)))
    hup.append(reload_model)
    try:  # SIGHUP: reload the config file (if any) and the model
        loop.add_signal_handler(signal.SIGHUP, lambda: [event.set() for event in hup])
    except (NotImplementedError, RuntimeError, AttributeError):
        pass
    try:
        summaries = await engine.run(forever=forever)
    finally:
        for watcher in watchers:
            watcher.cancel()
        for publisher in engine.publishers:
            await publisher.close()
    failed = failed_at_start + sum(1 for s in summaries.values() if s.state == "failed")
    for s in summaries.values():
        log.info("stream %s: %s after %.1f s of audio, %d windows %s", s.stream, s.state, s.audio_s,
                 s.windows, f"({s.detail})" if s.state == "failed" else "")
    return 1 if failed else 0


def _is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address: 127.0.0.0/8, ::1 or ``localhost``."""
    import ipaddress

    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # another host name, or "" (every interface)
        return False


def _control_settings(args: argparse.Namespace) -> str | None:
    """Resolve ``--control-token`` / ``$GENRESTREAM_CONTROL_TOKEN`` into ``args.control_token``.

    Returns
    -------
    str or None
        Why ``run`` must not start (control reachable beyond loopback without
        a token), or None when it may.
    """
    given = args.control_token is not None
    token = args.control_token if given else os.environ.get(CONTROL_TOKEN_ENV)
    args.control_token = token or None  # an empty token counts as none
    if not args.control:
        for option, used in (("--control-token", given), ("--control-allow-files", args.control_allow_files)):
            if used:
                log.warning("%s has no effect without --control", option)
        return None
    if args.control_token is None and not args.no_server and not _is_loopback(args.host):
        return (f"--control on --host {args.host or repr(args.host)} needs a token: anyone who can reach the port "
                f"could make this server open any URL or probe local paths. Set {CONTROL_TOKEN_ENV} "
                "(or --control-token TOKEN), or listen on loopback (127.0.0.1, ::1, localhost)")
    return None


def _control_source_refusal(source: str) -> str | None:
    """Why a control message may not add ``source`` without ``--control-allow-files`` (None: it may)."""
    import re

    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", source)
    scheme = match.group(1).lower() if match else None
    if scheme in ("http", "https"):
        return None
    if source == "mic" or source.startswith("mic:"):
        kind = "a microphone"
    elif scheme is None:
        kind = "a file path"
    else:
        kind = f"a {scheme}:// URL"
    return (f"control: only http:// and https:// sources can be added, got {kind}; "
            "files and microphones need genrestream run --control-allow-files")


async def _control(engine, request: dict, allow_files: bool = False) -> dict:
    """Add or remove a stream on a WebSocket client's request (``--control``).

    The server has checked the token (if any) and removed it from ``request``.
    Without ``allow_files`` only http(s) sources may be added.

    Raises
    ------
    ValueError
        If the request is incomplete, names an unknown action, a source that
        is not allowed or cannot be opened, or a stream id in use or not running.
    """
    from .sources import SourceError, open_source

    action, stream_id = request.get("action"), request.get("stream")
    if action == "model":
        path = request.get("path")
        if not isinstance(path, str) or not path:
            raise ValueError("control: 'path' (a shipped model's name or an ONNX file) is required to swap the model")
        if not allow_files and path not in _shipped_model_names():
            raise ValueError("control: only a shipped model's name can be given "
                             f"({', '.join(_shipped_model_names())}); a file path needs --control-allow-files")
        tag = await _swap_model(engine, path)
        return {"ok": True, "detail": f"model {tag} takes over at each stream's next window"}
    if not isinstance(stream_id, str) or not stream_id:
        raise ValueError("control: 'stream' (the stream id) is required")
    if action == "add":
        source = request.get("source")
        if not isinstance(source, str) or not source:
            raise ValueError("control: 'source' is required to add a stream")
        refusal = None if allow_files else _control_source_refusal(source)
        if refusal:
            raise ValueError(refusal)
        try:
            opened = open_source(source)
        except SourceError as exc:
            raise ValueError(f"control: {exc}") from None
        engine.add(opened, stream_id)
        log.info("control: added stream %s (%s)", stream_id, source)
        return {"ok": True, "detail": f"added {stream_id}"}
    if action == "remove":
        if stream_id not in engine.running_ids:
            raise ValueError(f"control: no running stream {stream_id!r}")
        engine.remove(stream_id)
        await engine.wait_stream(stream_id)
        log.info("control: removed stream %s", stream_id)
        return {"ok": True, "detail": f"removed {stream_id}"}
    raise ValueError(f"control: unknown action {action!r}; expected 'add', 'remove' or 'model'")


def _shipped_model_names() -> list[str]:
    from .model import SHIPPED_MODELS

    return sorted(SHIPPED_MODELS)


async def _swap_model(engine, spec: str | None) -> str:
    """Load a model off the event loop and hand it to the engine (control ``model``, SIGHUP).

    Raises
    ------
    ValueError
        If the model cannot be loaded or the engine refuses it; the running model stays.
    """
    from .model import GenreModel

    try:
        model = await asyncio.get_running_loop().run_in_executor(None, GenreModel, spec)
        engine.set_model(model)
    except (OSError, ValueError, RuntimeError) as exc:
        log.error("model %s refused, keeping %s: %s", spec, engine.model.info.tag, exc)
        raise ValueError(f"model: {exc}; still classifying with {engine.model.info.tag}") from None
    log.info("model %s (%s) in use", model.info.tag, model.path)
    return model.info.tag


async def _reload_model_on(engine, spec: str | None, signalled: asyncio.Event) -> None:
    """SIGHUP: load ``--model`` again (its file may have been replaced) and swap it in."""
    while True:
        await signalled.wait()
        signalled.clear()
        try:
            await _swap_model(engine, spec)
        except ValueError:
            pass  # logged; the old model goes on


async def _watch_config(engine, path: str, current: dict, poll_s: float, reload_now: asyncio.Event) -> None:
    """Apply changes of the configuration file to the running engine (poll, or SIGHUP)."""
    from pathlib import Path

    from .config import diff, load_config

    def signature():
        try:
            st = Path(path).stat()
            return st.st_mtime_ns, st.st_size
        except OSError:
            return None

    seen = signature()
    while True:
        try:
            await asyncio.wait_for(reload_now.wait(), poll_s)
        except asyncio.TimeoutError:
            pass
        now = signature()
        if now == seen and not reload_now.is_set():
            continue
        seen = now
        reload_now.clear()
        try:
            new = load_config(path)
        except (OSError, ValueError) as exc:
            log.error("config reload: keeping the running streams: %s", exc)
            continue
        remove, add = diff(current, new)
        for name in remove:
            if name in engine.running_ids:
                engine.remove(name)
                await engine.wait_stream(name)
            log.info("config reload: stopped %s", name)
        for name in add:
            try:
                engine.add(new[name].open(), name)
                log.info("config reload: started %s (%s)", name, new[name].source)
            except (ValueError, OSError) as exc:
                log.error("config reload: cannot start %s: %s", name, exc)
        current.clear()
        current.update(new)


def cmd_run(args: argparse.Namespace) -> int:
    if not args.sources and not args.config and not args.control:
        print("genrestream run: give at least one SOURCE, or --config TOML, or --control", file=sys.stderr)
        return 2
    refusal = _control_settings(args)
    if refusal:
        print(f"genrestream run: {refusal}", file=sys.stderr)
        return 2
    return asyncio.run(_run(args))


def cmd_classify(args: argparse.Namespace) -> int:
    from .classify import classify_files, format_result
    from .model import GenreModel

    results = classify_files(args.files, GenreModel(args.model), hop_s=args.hop_s, profile=args.profile)
    for result in results:
        if args.json:
            print(json.dumps(result, ensure_ascii=False), flush=True)
        else:
            print(format_result(result), flush=True)
        if result.get("error"):
            log.error("%s", result["error"])
    return 1 if any(r.get("error") for r in results) else 0


def cmd_devices(args: argparse.Namespace) -> int:
    try:
        import sounddevice as sd
    except OSError as exc:
        print(f"genrestream devices: PortAudio is not usable: {exc}", file=sys.stderr)
        return 1
    found = False
    for index, device in enumerate(sd.query_devices()):
        if device["max_input_channels"] > 0:
            found = True
            print(f"{index:3d}  {device['name']}  ({device['max_input_channels']} ch, "
                  f"{device['default_samplerate']:.0f} Hz)")
    if not found:
        print("no input devices", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .model import DEFAULT_MODEL_NAME, SHIPPED_MODELS
    from .smoothing import DEFAULT_PROFILE, PROFILES

    model_help = (f"a shipped model ({', '.join(sorted(SHIPPED_MODELS))}) or an ONNX file "
                  f"(default: $GENRESTREAM_MODEL, else {DEFAULT_MODEL_NAME})")
    profile_help = ("smoothing: radio (default; few false changes, a change announced in about 15 s) or dj "
                    "(a hard cut announced within 8 s, a crossfade's onset at the start of the fade)")
    parser = argparse.ArgumentParser(prog="genrestream", description="Real-time music-genre classification.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="classify live sources and publish genre events")
    run.add_argument("sources", nargs="*", metavar="SOURCE",
                     help="audio file, http(s) stream URL, 'mic' or 'mic:NAME_OR_INDEX'")
    run.add_argument("--config", default=None, metavar="TOML",
                     help="streams from a TOML file ([[streams]] name, source, options); "
                          "reloaded when it changes or on SIGHUP; keeps running until interrupted")
    run.add_argument("--config-poll-s", type=_positive_float, default=2.0, help=argparse.SUPPRESS)
    run.add_argument("--control", action="store_true",
                     help="accept add/remove/model control messages from WebSocket clients; keeps running until "
                          "interrupted. On loopback (127.0.0.0/8, ::1, localhost) without a token any local "
                          "client may send them; on any other --host a token is required")
    run.add_argument("--control-token", default=None, metavar="TOKEN",
                     help=f"with --control: every control message must carry \"token\": TOKEN (default: "
                          f"${CONTROL_TOKEN_ENV}; empty means none). Prefer the variable: a command line is "
                          "visible to other users of this machine")
    run.add_argument("--control-allow-files", action="store_true",
                     help="with --control: also let control messages add file paths and microphones "
                          "(default: http:// and https:// sources only)")
    run.add_argument("--name", action="append", default=[],
                     help="stream id for the next SOURCE, in order (repeatable); default: derived from the source")
    run.add_argument("--model", default=None, help=model_help)
    run.add_argument("--profile", choices=sorted(PROFILES), default=DEFAULT_PROFILE, help=profile_help)
    run.add_argument("--host", default="127.0.0.1", help="WebSocket and dashboard address (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=8765, help="WebSocket and dashboard port (default 8765)")
    run.add_argument("--no-server", action="store_true", help="no WebSocket/dashboard server")
    run.add_argument("--redis-url", default=None, help="publish events to Redis, e.g. redis://127.0.0.1:6379/0")
    run.add_argument("--jsonl", action="store_true", help="write every event to stdout, one JSON object per line")
    run.add_argument("--realtime", action="store_true", help="pace files at playback speed")
    run.add_argument("--loop", action="store_true",
                     help="play files again from the start when they end (a file standing in for a station)")
    run.add_argument("--stall-timeout-s", type=_positive_float, default=15.0,
                     help="live sources: reconnect after this many seconds without audio (default 15)")
    run.add_argument("--max-backoff-s", type=_positive_float, default=30.0,
                     help="live sources: longest wait between reconnection attempts (default 30)")
    run.add_argument("--max-reconnects", type=int, default=None, metavar="N",
                     help="live sources: fail after N failed reconnection attempts in a row (default: retry for ever)")
    run.add_argument("--reconnect-at-start", action="store_true",
                     help="live sources: retry even when the first connection fails (default: fail at once, "
                          "so that a wrong URL is reported)")
    run.add_argument("--hop-s", type=_positive_float, default=None,
                     help="seconds between windows (default: the model's, about 1; a log-mel model rounds it to its "
                          "16 ms frames)")
    run.add_argument("--feature-processes", type=int, default=0, metavar="N",
                     help="compute features in N worker processes (one per core for many streams; "
                          "default 0: threads of this process, which use about one core)")
    run.set_defaults(func=cmd_run)

    classify = sub.add_parser("classify", help="classify audio files offline")
    classify.add_argument("files", nargs="+", metavar="FILE")
    classify.add_argument("--json", action="store_true", help="one JSON object per file per line")
    classify.add_argument("--model", default=None, help=model_help)
    classify.add_argument("--profile", choices=sorted(PROFILES), default=DEFAULT_PROFILE, help=profile_help)
    classify.add_argument("--hop-s", type=_positive_float, default=None,
                          help="seconds between windows (default: the model's, about 1; a log-mel model rounds it to its "
                          "16 ms frames)")
    classify.set_defaults(func=cmd_classify)

    devices = sub.add_parser("devices", help="list audio input devices")
    devices.set_defaults(func=cmd_devices)

    for ep in entry_points(group=PLUGIN_GROUP):  # dispatched in main(), listed here for --help
        extra = PLUGIN_EXTRAS.get(ep.name, "train")
        sub.add_parser(ep.name, help=f"see 'genrestream {ep.name} --help'" + (f" (needs the {extra} extra)" if extra else ""))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``genrestream`` console script."""
    # One BLAS thread per process, set before numpy loads: the engine
    # parallelises across streams, and OpenBLAS's own threads fighting for
    # the same cores cost several times the work (measured in benchmarks/).
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
    argv = list(sys.argv[1:] if argv is None else argv)
    plugins = {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}
    position = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if position is not None and argv[position] in plugins:
        _setup_logging(-1 if "-q" in argv[:position] or "--quiet" in argv[:position] else argv[:position].count("-v"))
        name = argv[position]
        try:
            command = plugins[name].load()
        except ImportError as exc:
            extra = PLUGIN_EXTRAS.get(name) or "train"
            print(f"genrestream {name}: needs the {extra} extra: pip install -e '.[{extra}]' ({exc})", file=sys.stderr)
            return 2
        return int(command(argv[position + 1 :]) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(-1 if args.quiet else args.verbose)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as exc:
        print(f"genrestream {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
