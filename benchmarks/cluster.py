"""`genrestream cluster` on a two-node Ray cluster on this machine, against one `genrestream run`.

Usage (from the repository, after ``scripts/setup.sh train test cluster``)::

    .venv/bin/python benchmarks/cluster.py                          # musicnn-msd, 16,24,32 streams, recovery
    .venv/bin/python benchmarks/cluster.py --model gtzan-mlp --streams 40,80
    .venv/bin/python benchmarks/cluster.py --phases recovery --recovery-streams 8

Everything is real and on loopback: a redis-server started for the run, a
``ray.cluster_utils.Cluster`` of two nodes (a head and a worker, ``--node-cpus``
CPUs each, default 1), the console scripts as subprocesses, and a Redis
subscriber (a thread of this process) that stamps ``time.monotonic()`` on
receipt of every prediction. Streams are the clips of ``../shared/audio/free``
(``GENRESTREAM_SHARED``), looping, paced at playback speed (``--realtime``).

Phases:

``sustain``
    For each N of ``--streams``: N streams for ``--duration-s`` seconds, once
    through ``genrestream run --config`` (one process, the machine's every
    core), once through ``genrestream cluster`` (two shards of one CPU each,
    one per node). Per stream, lag = receipt − stream_time_s (+ a constant);
    N is *sustained* when, for every stream, the median lag over the last
    third of the measured interval exceeds that over the first third by less
    than one hop (no lag growth) and the stream delivered at least 90 % of the
    windows due. The first ``--warmup-s`` seconds are not measured.
``recovery``
    ``--recovery-streams`` streams on the cluster; once every stream plays,
    the worker node is killed (``Cluster.remove_node(allow_graceful=False)``:
    its raylet and workers get SIGKILL). Reports the time from the kill to the
    restarted shard's gap status and to the first new prediction of each
    moved stream. Ray's own node-failure detection is left at its defaults
    unless ``--fast-health-check``.

The machine is shared and has 2 cores: figures vary with what else runs;
compare the two modes of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GENRESTREAM_SHARED", REPO.parent / "shared")).resolve()
FREE_AUDIO = SHARED / "audio" / "free"
GENRESTREAM = [str(Path(sys.executable).with_name("genrestream"))]
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def say(msg: str = "") -> None:
    print(msg, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def music_clips() -> list[Path]:
    clips = sorted(p for p in FREE_AUDIO.glob("*.ogg") if not p.name.startswith(("speech_", "nature_")))
    if not clips:
        raise SystemExit(f"no clips in {FREE_AUDIO} (set GENRESTREAM_SHARED)")
    return clips


def write_config(path: Path, n: int) -> list[str]:
    clips = music_clips()
    lines, names = ["[defaults]", "loop = true", ""], []
    for i in range(n):
        name = f"st{i:03d}"
        names.append(name)
        lines += ["[[streams]]", f'name = "{name}"', f'source = "{clips[i % len(clips)]}"', ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return names


class Redis:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed")
        self.port = free_port()
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        import redis

        self.client = redis.Redis.from_url(self.url, decode_responses=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Subscriber:
    """(receipt monotonic s, event) of every message on genrestream:events."""

    def __init__(self, url: str) -> None:
        import redis

        self.pubsub = redis.Redis.from_url(url, decode_responses=True).pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe("genrestream:events")
        self.received: list[tuple[float, dict]] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message and message["type"] == "message":
                self.received.append((time.monotonic(), json.loads(message["data"])))

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        self.pubsub.close()


def lag_report(received, names, t0: float, t1: float, hop_s: float) -> dict:
    """Per stream lag growth (s) and delivered fraction over [t0, t1]; sustained or not."""
    per: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for at, event in received:
        if event.get("type") == "prediction" and t0 <= at <= t1 and event["stream"] in per:
            per[event["stream"]].append((at, at - event["stream_time_s"]))
    third = (t1 - t0) / 3
    growth, delivered = {}, {}
    for name, rows in per.items():
        first = [lag for at, lag in rows if at < t0 + third]
        last = [lag for at, lag in rows if at > t1 - third]
        growth[name] = statistics.median(last) - statistics.median(first) if first and last else float("inf")
        delivered[name] = len(rows) / ((t1 - t0) / hop_s)
    worst = max(growth.values())
    least = min(delivered.values())
    return {"sustained": worst < hop_s and least >= 0.9, "worst_lag_growth_s": round(worst, 3),
            "least_delivered": round(least, 3),
            "windows_per_s": round(sum(len(r) for r in per.values()) / (t1 - t0), 1)}


def start_cluster(node_cpus: int, fast_health_check: bool):
    from ray.cluster_utils import Cluster

    head_args = {"num_cpus": node_cpus, "node_ip_address": "127.0.0.1", "include_dashboard": False}
    if fast_health_check:
        head_args["_system_config"] = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3,
                                       "health_check_timeout_ms": 1000}
    cluster = Cluster(initialize_head=True, head_node_args=head_args)
    worker = cluster.add_node(num_cpus=node_cpus, node_ip_address="127.0.0.1")
    return cluster, worker


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def run_mode(mode: str, n: int, args, redis: Redis, folder: Path, cluster_address: str | None) -> dict:
    config = folder / f"streams-{n}.toml"
    names = write_config(config, n)
    redis.client.flushall()
    sub = Subscriber(redis.url)
    common = ["--config", str(config), "--redis-url", redis.url, "--realtime"]
    if args.model:
        common += ["--model", args.model]
    if mode == "run":
        cmd = GENRESTREAM + ["-q", "run", *common, "--no-server"]
    else:
        cmd = GENRESTREAM + ["-q", "cluster", *common, "--ray-address", cluster_address, "--shards", "2",
                             "--shard-cpus", str(args.node_cpus)]
    log = (folder / f"{mode}-{n}.log").open("w")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # every stream has classified a window
            seen = {e["stream"] for _, e in sub.received if e.get("type") == "prediction"}
            if seen >= set(names):
                break
            time.sleep(0.5)
        else:
            return {"mode": mode, "n": n, "sustained": False, "detail": "not every stream started in 120 s"}
        t0 = time.monotonic() + args.warmup_s
        time.sleep(args.warmup_s + args.duration_s)
        t1 = time.monotonic()
        hop_s = 1.008 if (args.model or "musicnn-msd").startswith("musicnn") else 1.0
        report = {"mode": mode, "n": n, **lag_report(sub.received, names, t0, t1, hop_s)}
    finally:
        report_rc = stop(proc)
        log.close()
        sub.close()
    report["exit"] = report_rc
    return report


def recovery(args, redis: Redis, folder: Path) -> dict:
    cluster, worker = start_cluster(args.node_cpus, args.fast_health_check)
    try:
        config = folder / "recovery.toml"
        names = write_config(config, args.recovery_streams)
        redis.client.flushall()
        sub = Subscriber(redis.url)
        cmd = GENRESTREAM + ["cluster", "--config", str(config), "--redis-url", redis.url, "--realtime",
                             "--ray-address", cluster.address, "--shards", "2", "--shard-cpus", "0.5"]
        if args.model:
            cmd += ["--model", args.model]
        log_path = folder / "recovery.log"
        log = log_path.open("w")
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                seen = {e["stream"] for _, e in sub.received if e.get("type") == "prediction"}
                if seen >= set(names):
                    break
                time.sleep(0.5)
            time.sleep(3)
            import re

            ups = dict(re.findall(r"cluster: (shard-\d+) is up on node ([0-9a-f]+)", log_path.read_text()))
            on_worker = [s for s, node in ups.items() if node == worker.node_id]
            moved = sorted({e["stream"] for _, e in sub.received if e.get("worker") in on_worker})
            killed_at = time.monotonic()
            cluster.remove_node(worker, allow_graceful=False)
            to_gap, to_prediction, gap_seq = {}, {}, {}
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and len(to_prediction) < len(moved):
                for at, e in list(sub.received):
                    if at < killed_at or e["stream"] not in moved:
                        continue
                    if e["type"] == "status" and "gap_s" in e and e["stream"] not in to_gap:
                        to_gap[e["stream"]] = at - killed_at
                        gap_seq[e["stream"]] = e["seq"]
                    if e["type"] == "prediction" and e["seq"] > gap_seq.get(e["stream"], float("inf")):
                        to_prediction.setdefault(e["stream"], at - killed_at)
                time.sleep(0.2)
            others = [n for n in names if n not in moved]
            disturbed = sorted({e["stream"] for at, e in sub.received
                                if at >= killed_at and e["stream"] in others and e["type"] == "status"})
        finally:
            rc = stop(proc)
            log.close()
            sub.close()
        return {"streams": len(names), "moved": len(moved), "fast_health_check": args.fast_health_check,
                "kill_to_gap_status_s": round(max(to_gap.values()), 2) if to_gap else None,
                "kill_to_first_prediction_s_max": round(max(to_prediction.values()), 2) if to_prediction else None,
                "kill_to_first_prediction_s_median":
                    round(statistics.median(to_prediction.values()), 2) if to_prediction else None,
                "resumed": f"{len(to_prediction)}/{len(moved)}", "others_disturbed": disturbed, "exit": rc}
    finally:
        cluster.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a shipped model or ONNX path (default: genrestream's)")
    parser.add_argument("--streams", default="16,24,32", help="N to try, comma-separated")
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--warmup-s", type=float, default=10.0)
    parser.add_argument("--node-cpus", type=int, default=1)
    parser.add_argument("--phases", default="sustain,recovery")
    parser.add_argument("--modes", default="run,cluster", help="sustain: which of run, cluster")
    parser.add_argument("--recovery-streams", type=int, default=8)
    parser.add_argument("--fast-health-check", action="store_true",
                        help="recovery: Ray declares a node dead after ~3 s instead of its default")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    import tempfile

    phases = set(args.phases.split(","))
    folder = Path(tempfile.mkdtemp(prefix="genrestream-cluster-bench-"))
    redis = Redis()
    results: dict = {"model": args.model or "default", "node_cpus": args.node_cpus, "cores": os.cpu_count(),
                     "loadavg_start": os.getloadavg()}
    try:
        if "sustain" in phases:
            cluster, _ = start_cluster(args.node_cpus, False)
            try:
                rows = []
                for n in [int(x) for x in args.streams.split(",")]:
                    for mode in args.modes.split(","):
                        row = run_mode(mode, n, args, redis, folder, cluster.address)
                        say(json.dumps(row))
                        rows.append(row)
                results["sustain"] = rows
            finally:
                cluster.shutdown()
        if "recovery" in phases:
            results["recovery"] = recovery(args, redis, folder)
            say(json.dumps(results["recovery"]))
    finally:
        redis.close()
    results["loadavg_end"] = os.getloadavg()
    say()
    for mode in ("run", "cluster"):
        best = max((r["n"] for r in results.get("sustain", []) if r["mode"] == mode and r["sustained"]), default=0)
        say(f"{mode:8s}: most streams sustained {best}")
    if "recovery" in results:
        rec = results["recovery"]
        say(f"recovery: node killed → gap status {rec['kill_to_gap_status_s']} s, → first new prediction "
            f"{rec['kill_to_first_prediction_s_max']} s (max over {rec['moved']} moved streams)")
    say(f"logs in {folder}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
