"""``genrestream cluster``: the streams of one configuration file over the nodes of a Ray cluster.

::

    genrestream cluster --config streams.toml --redis-url redis://HOST:6379/0 \\
        [--ray-address HOST:PORT] [--shards N] [--realtime] [--model NAME] ...

The driver (this process) reads the configuration, splits its streams into
``N`` shares balanced by count, and starts ``N`` shard actors (Ray actors,
placed with Ray's ``SPREAD`` strategy over the cluster's nodes). Each shard is
one :class:`stream.engine.Engine` with its own model, a
:class:`stream.publishers.RedisPublisher` and ``worker`` set to the shard's
name (``shard-0``, ``shard-1``...), running in an asyncio loop of its own: Redis
gets the PUBLISH, XADD and HSET of ``genrestream run``, and every event an
``id`` and a ``worker``.

A stream keeps its shard for as long as it is configured: when the file
changes, streams removed are stopped, streams whose source or options changed
are restarted on their shard, streams added go to the shard with the fewest
streams, and the others are not touched. SIGHUP, as for ``genrestream run``,
reads the file at once and has every shard load ``--model`` again (each
stream changes over at its next window).

Ray restarts a shard that dies, its node with it (``max_restarts=-1``), on any
node with room. The driver asks every shard for a heartbeat each second; a
heartbeat from a new incarnation of a shard means it was restarted, and the
driver sends it its streams again together with the wall time of each
stream's last event it knew of: the shard emits a ``status`` event naming the
gap (``gap_s``) before the stream resumes. What the shard had already sent is
in Redis; what it had queued but not sent when it died is lost with it, and
events are never sent twice by a shard, but a consumer that reads both the
XADD stream and PUBLISH should drop duplicates by ``id``.

Without ``--ray-address`` the command starts a Ray runtime of its own, bound
to 127.0.0.1, without Ray's dashboard and with usage reporting off. SIGINT or
SIGTERM stops every shard (each sends what it has queued to Redis) and that
runtime, and the command exits 0.

Ray is the ``cluster`` extra (``pip install -e ".[cluster]"``); it is
imported only by :func:`main`, so ``genrestream run`` never loads it.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

log = logging.getLogger("genrestream.cluster")

HEARTBEAT_S = 1.0
"""Seconds between the driver's heartbeat requests to each shard."""

SHARD_STOP_TIMEOUT_S = 20.0
"""How long the driver waits at shutdown for the shards to stop and flush their Redis queues."""

UNANSWERED_WARNING_S = 30.0
"""A shard that has not answered a heartbeat for this long is reported (Ray may have no room to restart it)."""

RAY_NAMESPACE = "genrestream"


# --------------------------------------------------------------------------- assignment

def assign_streams(current: Mapping[str, int], names: Iterable[str], n_shards: int) -> dict[str, int]:
    """Place streams on shards, balanced by count, moving none that is placed already.

    Parameters
    ----------
    current : mapping of str to int
        The present placement: stream name → shard index.
    names : iterable of str
        Every stream that should run (in configuration order).
    n_shards : int
        Number of shards, indices ``0 .. n_shards - 1``.

    Returns
    -------
    dict of str to int
        Stream name → shard index. A stream of ``current`` that is still
        wanted keeps its shard (if that shard exists); every other stream goes
        to the shard with the fewest streams at that point (the lowest index
        among equals), in the order of ``names``.

    Raises
    ------
    ValueError
        If ``n_shards`` is less than 1.
    """
    if n_shards < 1:
        raise ValueError(f"n_shards: expected 1 or more, got {n_shards}")
    wanted = list(dict.fromkeys(names))
    placed = {name: current[name] for name in wanted if name in current and 0 <= current[name] < n_shards}
    counts = [0] * n_shards
    for shard in placed.values():
        counts[shard] += 1
    out: dict[str, int] = {}
    for name in wanted:
        if name in placed:
            out[name] = placed[name]
            continue
        shard = min(range(n_shards), key=lambda k: (counts[k], k))
        counts[shard] += 1
        out[name] = shard
    return out


# --------------------------------------------------------------------------- the shard

class _LastEvent:
    """A publisher that only remembers the wall time (``time.time()``) of each stream's last event,
    and the stream time of its last prediction."""

    def __init__(self) -> None:
        self.wall_s: dict[str, float] = {}
        self.stream_time_s: dict[str, float] = {}

    async def start(self) -> None:
        pass

    def publish(self, event: dict[str, Any]) -> None:
        stream = event.get("stream")
        if stream is not None:
            self.wall_s[stream] = time.time()
            if event.get("type") == "prediction":
                self.stream_time_s[stream] = float(event["stream_time_s"])

    async def close(self) -> None:
        pass


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray (unit use): no node
        return None


def _warm_up(model) -> float:
    """Run one window of silence through the model's frontend and the model, so that the first stream
    of a new or restarted shard does not wait for numba's compilation (tens of seconds on a busy
    machine with a cold cache) or ONNX Runtime's first call. Returns the seconds it took."""
    import numpy as np

    started = time.monotonic()
    hop = model.frontend.snap_hop(int(model.info.hop_s * model.info.sample_rate))
    extractor = model.frontend.extractor(hop)
    windows = extractor.push(np.zeros(model.info.window_length + hop, dtype=np.float32))
    if windows:
        model.predict(np.stack([np.asarray(windows[0][1], dtype=np.float32)]))
    return time.monotonic() - started


class ShardWorker:
    """One shard: an engine with a share of the streams, in an asyncio loop of its own thread.

    Ray runs it as an actor (:func:`shard_actor_class`); it is a plain class,
    so it can also run in-process.

    Parameters
    ----------
    name : str
        The shard's name, added as ``worker`` to every event.
    redis_url : str
        Where to publish (``redis://host:port/db``).
    settings : dict
        ``model`` (a shipped model's name or an ONNX path, or None for the
        default), ``hop_s`` (None for the model's), ``realtime`` (bool),
        ``profile`` (smoothing profile), ``feature_processes`` (int),
        ``intra_op_threads`` (ONNX Runtime threads, None for every core),
        ``inference_workers`` (ONNX Runtime calls at once, default 1),
        ``log_level`` (a :mod:`logging` level).

    Raises
    ------
    FileNotFoundError, ValueError
        If the model cannot be loaded (see :class:`stream.model.GenreModel`).
    RuntimeError
        If the engine's loop did not start within 60 s.
    """

    def __init__(self, name: str, redis_url: str, settings: Mapping[str, Any]) -> None:
        logging.basicConfig(level=settings.get("log_level", logging.WARNING), stream=sys.stderr,
                            format=f"%(asctime)s %(levelname)s {name} %(name)s: %(message)s")
        for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(variable, "1")
        from .engine import Engine
        from .model import GenreModel
        from .publishers import RedisPublisher

        self.name = name
        self.settings = dict(settings)
        self.incarnation = uuid.uuid4().hex
        self.started_wall_s = time.time()
        model = GenreModel(settings.get("model"), intra_op_threads=settings.get("intra_op_threads"))
        warm_s = _warm_up(model)
        self.last_event = _LastEvent()
        self.engine = Engine(model, hop_s=settings.get("hop_s"), realtime=bool(settings.get("realtime")),
                             profile=settings.get("profile") or "radio",
                             feature_processes=int(settings.get("feature_processes") or 0), worker=name,
                             inference_workers=int(settings.get("inference_workers") or 1))
        self.redis = RedisPublisher(redis_url, metrics=self.engine.metrics)
        self.engine.publishers += [self.redis, self.last_event]
        self.configs: dict = {}  # stream name -> StreamConfig, as assigned
        self.version: int | None = None  # the driver's version of the assignment applied
        self._stopped = threading.Event()
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=f"{name}-engine", daemon=True)
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError(f"{name}: the engine's event loop did not start within 60 s")
        log.info("%s: model %s on node %s (warmed up in %.1f s)", name, model.info.tag, _node_id(), warm_s)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()
            self._stopped.set()

    async def _serve(self) -> None:
        for publisher in self.engine.publishers:
            await publisher.start()
        self._loop.call_soon(self._ready.set)
        try:
            await self.engine.run(forever=True)
        finally:
            for publisher in self.engine.publishers:
                await publisher.close()

    def assign(self, version: int, streams: Mapping[str, Any], resume: Mapping[str, float] | None = None) -> dict:
        """Run exactly ``streams`` (name → :class:`stream.config.StreamConfig`).

        Streams no longer listed are stopped, streams new or changed are
        (re)started, the others are left alone. A stream named in ``resume``
        (name → wall time, seconds since the epoch, of its last event before
        this shard was restarted) first gets a ``status`` event naming the gap.

        Returns
        -------
        dict
            The heartbeat (:meth:`heartbeat`) after the change, with
            ``errors``: stream name → why it could not be started.
        """
        future = asyncio.run_coroutine_threadsafe(self._apply(dict(streams), dict(resume or {})), self._loop)
        errors = future.result(timeout=120)
        self.version = version
        return {**self.heartbeat(), "errors": errors}

    async def _apply(self, new: dict, resume: dict[str, float]) -> dict[str, str]:
        from . import events
        from .config import diff

        engine = self.engine
        remove, add = diff(self.configs, new)
        for name in remove:
            if name in engine.running_ids:
                engine.remove(name)
                await engine.wait_stream(name)
            self.configs.pop(name, None)
            log.info("%s: stopped %s", self.name, name)
        errors: dict[str, str] = {}
        for name in add:
            cfg = new[name]
            start_time_s = 0.0
            if name in resume:  # wall time of its last event, or (wall time, stream time of its last prediction)
                last = resume[name]
                wall_s, stream_time_s = (last, None) if isinstance(last, (int, float)) else last
                gap_s = max(0.0, time.time() - float(wall_s))
                extra = {}
                # stream time goes on across the gap, as after a reconnect (from 0 if the driver had not yet
                # heard the stream's time in a heartbeat: killed within a second of its first prediction)
                if stream_time_s is not None:
                    start_time_s = float(stream_time_s) + gap_s
                    extra["gap_start_s"] = round(float(stream_time_s), 3)
                engine.emit(events.status(
                    name, "connecting", f"resumed on {self.name} after a shard restart: gap of {gap_s:.1f} s "
                    "since its last event", source=cfg.source, gap_s=round(gap_s, 3), **extra))
            try:
                engine.add(cfg.open(), name, start_time_s=start_time_s)
            except Exception as exc:  # noqa: BLE001 - one bad stream must not stop the shard's others
                errors[name] = f"{type(exc).__name__}: {exc}"
                log.error("%s: cannot start %s: %s", self.name, name, exc)
                continue
            self.configs[name] = cfg
            log.info("%s: started %s (%s)", self.name, name, cfg.source)
        return errors

    def heartbeat(self) -> dict:
        """What the driver needs: who this is and what runs here.

        Returns
        -------
        dict
            ``name``, ``incarnation`` (new at every start of the shard),
            ``version`` (of the assignment applied, None before the first),
            ``node_id`` (Ray's), ``host``, ``pid``, ``running`` (stream ids),
            ``last_event`` (stream → wall time of its last event, s since the
            epoch), ``lag_s`` (stream → seconds of audio received but not yet
            classified).
        """
        try:
            lag_s = {sid: round(lag, 3) for sid, lag in self.engine.lag_s().items()}
        except Exception:  # noqa: BLE001 - a stream starting or ending meanwhile: no lag this time
            lag_s = {}
        return {
            "name": self.name, "incarnation": self.incarnation, "version": self.version, "node_id": _node_id(),
            "host": socket.gethostname(), "pid": os.getpid(), "running": self.engine.running_ids,
            "last_event": dict(self.last_event.wall_s), "stream_time_s": dict(self.last_event.stream_time_s),
            "lag_s": lag_s, "started_wall_s": self.started_wall_s,
        }

    def reload_model(self) -> str:
        """Load the shard's model again (its file may have been replaced) and swap it in; SIGHUP of the driver.

        Each stream changes over at its next window (:meth:`stream.engine.Engine.set_model`).

        Returns
        -------
        str
            The model now in use (``name@version``).

        Raises
        ------
        ValueError
            If the model cannot be loaded or the engine refuses it; the running model stays.
        """
        from .model import GenreModel

        try:
            model = GenreModel(self.settings.get("model"), intra_op_threads=self.settings.get("intra_op_threads"))

            async def swap() -> None:
                self.engine.set_model(model)

            asyncio.run_coroutine_threadsafe(swap(), self._loop).result(timeout=60)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{self.name}: model refused, still classifying with {self.engine.model.info.tag}: "
                             f"{exc}") from None
        log.info("%s: model %s in use", self.name, model.info.tag)
        return model.info.tag

    def stop(self, timeout_s: float = SHARD_STOP_TIMEOUT_S) -> bool:
        """Stop every stream, send what is queued to Redis and end the loop; True if it ended in time."""
        self.engine.stop()
        return self._stopped.wait(timeout_s)


def shard_actor_class(shard_cpus: float):
    """The Ray actor class of :class:`ShardWorker`: restarted for ever, its calls retried across restarts.

    ``max_concurrency`` lets a heartbeat be answered while an assignment is
    being applied.
    """
    import ray

    return ray.remote(num_cpus=shard_cpus, max_restarts=-1, max_task_retries=-1, max_concurrency=4)(ShardWorker)


# --------------------------------------------------------------------------- the driver

@dataclass
class _Shard:
    index: int
    name: str
    actor: Any
    version: int = 0  # of the wanted assignment
    streams: dict = field(default_factory=dict)  # name -> StreamConfig wanted here
    incarnation: str | None = None
    applied: int | None = None  # version the shard reported
    node_id: str | None = None
    heartbeat_ref: Any = None
    heartbeat_sent: float = 0.0
    answered: float = 0.0
    assign_ref: Any = None
    resume: dict = field(default_factory=dict)
    warned: bool = False


def _is_loopback_address(address: str | None) -> bool:
    if not address:
        return True
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _prepare_ray_environment(address: str | None) -> None:
    """Environment for Ray, set before it is imported: no usage reporting; loopback stays loopback.

    Ray replaces a loopback bootstrap address by the machine's routable
    address (``ray._private.services.resolve_ip_for_localhost``) unless
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is off: with a runtime of our own,
    or a cluster that listens on 127.0.0.1 (``ray.cluster_utils.Cluster``
    in the tests), every connection must stay on loopback.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if _is_loopback_address(address):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


class ClusterDriver:
    """Keeps the configured streams running on the shards (see the module docstring).

    Parameters
    ----------
    config_path : str
        The ``--config`` TOML file (watched for changes).
    redis_url : str
    n_shards : int
    settings : dict
        Passed to every :class:`ShardWorker`.
    shard_cpus : float
        CPUs Ray reserves for each shard.
    config_poll_s : float
        Seconds between looks at the configuration file.

    Raises
    ------
    FileNotFoundError, ValueError
        If the configuration cannot be read (see :func:`stream.config.load_config`).
    """

    def __init__(self, config_path: str, redis_url: str, n_shards: int, settings: Mapping[str, Any],
                 shard_cpus: float = 1.0, config_poll_s: float = 2.0) -> None:
        from .config import load_config

        self.config_path = config_path
        self.redis_url = redis_url
        self.settings = dict(settings)
        self.shard_cpus = shard_cpus
        self.config_poll_s = config_poll_s
        self.configured = load_config(config_path)
        self._seen = self._signature()
        self.placement: dict[str, int] = {}
        self.last_event: dict[str, float] = {}  # stream -> wall time of its last event known (from heartbeats)
        self.last_stream_time: dict[str, float] = {}  # stream -> stream time of its last prediction known
        self.shards: list[_Shard] = []
        self.n_shards = int(n_shards)
        self.stopping = threading.Event()
        self.reload_now = threading.Event()
        self.reload_model_now = threading.Event()
        self._model_refs: dict = {}  # ObjectRef of a reload_model call -> shard name

    def _signature(self):
        try:
            st = Path(self.config_path).stat()
            return st.st_mtime_ns, st.st_size
        except OSError:
            return None

    # -- shards ------------------------------------------------------------------
    def start(self) -> None:
        actor_class = shard_actor_class(self.shard_cpus)
        for i in range(self.n_shards):
            name = f"shard-{i}"
            actor = actor_class.options(scheduling_strategy="SPREAD", name=f"genrestream-{name}-{os.getpid()}",
                                        namespace=RAY_NAMESPACE).remote(name, self.redis_url, self.settings)
            self.shards.append(_Shard(i, name, actor, answered=time.monotonic()))
        self._place(self.configured)
        log.info("cluster: %d streams on %d shards (%s)", len(self.configured), self.n_shards,
                 ", ".join(f"{s.name}: {len(s.streams)}" for s in self.shards))

    def _place(self, configured: Mapping[str, Any]) -> None:
        """Compute the placement for ``configured`` and bump the version of every shard whose share changed."""
        self.placement = assign_streams(self.placement, configured, self.n_shards)
        for shard in self.shards:
            wanted = {name: configured[name] for name, k in self.placement.items() if k == shard.index}
            if wanted != shard.streams:
                shard.streams = wanted
                shard.version += 1

    def reload(self) -> None:
        """Read the configuration file again; keep the running streams if it is invalid."""
        from .config import diff, load_config

        try:
            new = load_config(self.config_path)
        except (OSError, ValueError) as exc:
            log.error("config reload: keeping the running streams: %s", exc)
            return
        remove, add = diff(self.configured, new)
        if not remove and not add:
            return
        self.configured = new
        self._place(new)
        for name in remove:
            if name not in new:
                self.last_event.pop(name, None)
                self.last_stream_time.pop(name, None)
        log.info("config reload: %d stopped or changed, %d started or changed: %s", len(remove), len(add),
                 ", ".join(f"{s.name}: {len(s.streams)}" for s in self.shards))

    def step(self, timeout_s: float = 0.5) -> None:
        """One round: collect answers, send heartbeats and assignments that are due, look at the config."""
        import ray

        now = time.monotonic()
        if self.reload_now.is_set() or self._signature() != self._seen:
            self._seen = self._signature()
            self.reload_now.clear()
            self.reload()
        if self.reload_model_now.is_set():
            self.reload_model_now.clear()
            for shard in self.shards:
                self._model_refs[shard.actor.reload_model.remote()] = shard.name
        if self._model_refs:
            done, _ = ray.wait(list(self._model_refs), num_returns=len(self._model_refs), timeout=0)
            for ref in done:
                name = self._model_refs.pop(ref)
                try:
                    log.info("cluster: %s: model %s in use", name, ray.get(ref))
                except Exception as exc:  # noqa: BLE001 - the shard keeps its model; say why
                    log.error("cluster: %s: %s", name, getattr(exc, "cause", None) or exc)
        for shard in self.shards:
            if shard.heartbeat_ref is None and now - shard.heartbeat_sent >= HEARTBEAT_S:
                shard.heartbeat_ref = shard.actor.heartbeat.remote()
                shard.heartbeat_sent = now
            if (shard.assign_ref is None and shard.incarnation is not None and shard.applied != shard.version):
                shard.assign_ref = shard.actor.assign.remote(shard.version, shard.streams, shard.resume)
            if not shard.warned and now - shard.answered > UNANSWERED_WARNING_S:
                shard.warned = True
                log.warning("cluster: %s has not answered for %.0f s (is there room in the cluster to restart it?)",
                            shard.name, now - shard.answered)
        pending = [ref for s in self.shards for ref in (s.heartbeat_ref, s.assign_ref) if ref is not None]
        if not pending:
            self.stopping.wait(timeout_s)
            return
        ready, _ = ray.wait(pending, num_returns=len(pending), timeout=timeout_s)
        for ref in ready:
            for shard in self.shards:
                if ref is shard.heartbeat_ref or ref is shard.assign_ref:
                    is_assign = ref is shard.assign_ref
                    if is_assign:
                        shard.assign_ref = None
                    else:
                        shard.heartbeat_ref = None
                    try:
                        answer = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - the actor died; Ray restarts it, we ask again
                        log.warning("cluster: %s did not answer: %s", shard.name, exc)
                        continue
                    self._answered(shard, answer, is_assign)

    def _answered(self, shard: _Shard, answer: dict, is_assign: bool) -> None:
        shard.answered = time.monotonic()
        shard.warned = False
        if answer["incarnation"] != shard.incarnation:
            if shard.incarnation is not None:
                # A new life: it runs nothing. Its streams resume with a status naming the gap.
                shard.resume = {name: (self.last_event[name], self.last_stream_time.get(name))
                                for name in shard.streams if name in self.last_event}
                log.warning("cluster: %s was restarted on node %s (was %s); resuming its %d streams",
                            shard.name, answer["node_id"], shard.node_id, len(shard.streams))
            else:
                log.info("cluster: %s is up on node %s", shard.name, answer["node_id"])
            shard.incarnation = answer["incarnation"]
            shard.applied = None
        if answer["incarnation"] == shard.incarnation:
            shard.node_id = answer["node_id"]
            if answer["version"] is not None:
                shard.applied = answer["version"]
                if shard.applied == shard.version:
                    shard.resume = {}
            for name, wall_s in answer["last_event"].items():
                if self.placement.get(name) == shard.index:
                    self.last_event[name] = max(wall_s, self.last_event.get(name, 0.0))
            for name, stream_time_s in answer.get("stream_time_s", {}).items():
                if self.placement.get(name) == shard.index:
                    self.last_stream_time[name] = stream_time_s
        if is_assign and answer.get("errors"):
            for name, why in answer["errors"].items():
                log.error("cluster: %s could not start %s: %s", shard.name, name, why)

    def stop(self) -> None:
        """Stop every shard (each flushes its Redis queue), then end the actors."""
        import ray

        refs = []
        for shard in self.shards:
            try:
                refs.append(shard.actor.stop.remote())
            except Exception:  # noqa: BLE001
                pass
        if refs:
            try:
                ray.wait(refs, num_returns=len(refs), timeout=SHARD_STOP_TIMEOUT_S + 5)
            except Exception:  # noqa: BLE001 - shutting down whatever happens
                pass
        for shard in self.shards:
            try:
                ray.kill(shard.actor, no_restart=True)
            except Exception:  # noqa: BLE001
                pass

    def run(self) -> None:
        """Start the shards and keep them running the configuration until :attr:`stopping` is set."""
        self.start()
        while not self.stopping.is_set():
            self.step()


# --------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    from .cli import _positive_float
    from .model import DEFAULT_MODEL_NAME, SHIPPED_MODELS
    from .smoothing import DEFAULT_PROFILE, PROFILES

    parser = argparse.ArgumentParser(
        prog="genrestream cluster",
        description="Run the streams of a configuration file on a Ray cluster: N shard actors, each an engine "
                    "with a share of the streams, publishing to Redis. Needs the cluster extra "
                    "(pip install -e '.[cluster]').")
    parser.add_argument("--config", required=True, metavar="TOML",
                        help="streams ([[streams]] name, source, options), as for genrestream run --config; "
                             "reloaded when it changes or on SIGHUP (which also reloads --model on every shard)")
    parser.add_argument("--redis-url", required=True, help="where every shard publishes, e.g. redis://10.0.0.5:6379/0")
    parser.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                        help="an existing Ray cluster (its GCS address, or 'auto'); default: start a local Ray "
                             "runtime on 127.0.0.1 (no Ray dashboard, no usage reporting)")
    parser.add_argument("--shards", type=int, default=None, metavar="N",
                        help="shard actors (default: the cluster's CPUs divided by --shard-cpus)")
    parser.add_argument("--shard-cpus", type=float, default=1.0,
                        help="CPUs Ray reserves for each shard (default 1; also its ONNX Runtime calls at once)")
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="local runtime only: CPUs it offers (default: this machine's)")
    parser.add_argument("--model", default=None,
                        help=f"a shipped model ({', '.join(sorted(SHIPPED_MODELS))}) or an ONNX file present on "
                             f"every node (default: $GENRESTREAM_MODEL, else {DEFAULT_MODEL_NAME})")
    parser.add_argument("--profile", choices=sorted(PROFILES), default=DEFAULT_PROFILE, help="smoothing profile")
    parser.add_argument("--realtime", action="store_true", help="pace files at playback speed")
    parser.add_argument("--hop-s", type=_positive_float, default=None, help="seconds between windows")
    parser.add_argument("--feature-processes", type=int, default=0, metavar="N",
                        help="per shard: compute features in N worker processes (default 0: threads)")
    parser.add_argument("--config-poll-s", type=_positive_float, default=2.0, help=argparse.SUPPRESS)
    return parser


def _connect_ray(args: argparse.Namespace) -> bool:
    """``ray.init``: connect to ``--ray-address`` or start a local runtime; True if we started it."""
    import ray

    common = dict(namespace=RAY_NAMESPACE, logging_level=logging.WARNING, log_to_driver=True)
    if args.ray_address:
        ray.init(address=args.ray_address,
                 **({"_node_ip_address": "127.0.0.1"} if _is_loopback_address(args.ray_address) else {}), **common)
        return False
    ray.init(address="local", num_cpus=args.num_cpus or os.cpu_count() or 1, include_dashboard=False,
             _node_ip_address="127.0.0.1", **common)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """``genrestream cluster`` (registered under the entry-point group ``genrestream.commands``)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.shards is not None and args.shards < 1:
        print(f"genrestream cluster: --shards: expected 1 or more, got {args.shards}", file=sys.stderr)
        return 2
    if args.shard_cpus <= 0:
        print(f"genrestream cluster: --shard-cpus: expected a positive number, got {args.shard_cpus}", file=sys.stderr)
        return 2
    from .config import load_config

    try:
        load_config(args.config)  # a bad file is reported before Ray starts
    except (FileNotFoundError, ValueError) as exc:
        print(f"genrestream cluster: {exc}", file=sys.stderr)
        return 2
    _prepare_ray_environment(args.ray_address)
    try:
        import ray
    except ImportError as exc:
        print(f"genrestream cluster: needs the cluster extra: pip install -e '.[cluster]' ({exc})", file=sys.stderr)
        return 2

    stopping = threading.Event()
    driver: ClusterDriver | None = None

    def on_signal(signum, frame):  # noqa: ARG001
        log.info("cluster: %s: stopping the shards", signal.Signals(signum).name)
        stopping.set()
        if driver is not None:
            driver.stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    started_runtime = False
    try:
        started_runtime = _connect_ray(args)
        # ray.init installs handlers of its own: ours decide how the command ends.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
        def on_hup(signum, frame):  # noqa: ARG001 - as genrestream run: the config file and the model
            if driver is not None:
                driver.reload_now.set()
                driver.reload_model_now.set()

        signal.signal(signal.SIGHUP, on_hup)
        n_shards = args.shards or max(1, int(ray.cluster_resources().get("CPU", 1) // args.shard_cpus))
        settings = {
            "model": args.model, "hop_s": args.hop_s, "realtime": args.realtime, "profile": args.profile,
            # as `run` does on the CPU: one single-threaded ONNX Runtime call per CPU at once (musicnn's small
            # convolutions parallelise poorly over intra-op threads)
            "feature_processes": args.feature_processes, "intra_op_threads": 1,
            "inference_workers": max(1, int(args.shard_cpus)),
            "log_level": logging.getLogger().getEffectiveLevel(),
        }
        driver = ClusterDriver(args.config, args.redis_url, n_shards, settings, shard_cpus=args.shard_cpus,
                               config_poll_s=args.config_poll_s)
        if stopping.is_set():
            driver.stopping.set()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        log.info("cluster: Ray %s, %d nodes, %s CPUs; %d shards of %g CPU%s", ray.__version__, len(nodes),
                 ray.cluster_resources().get("CPU", 0), n_shards, args.shard_cpus,
                 " (local runtime on 127.0.0.1)" if started_runtime else f" at {args.ray_address}")
        driver.run()
    except (FileNotFoundError, ValueError) as exc:
        print(f"genrestream cluster: {exc}", file=sys.stderr)
        return 2
    finally:
        if driver is not None and driver.shards:
            driver.stop()
        if ray.is_initialized():
            ray.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("cluster: stopped")
    return 0
