"""`genrestream cluster` on real Ray: a two-node cluster on this machine, a real redis-server, the real command.

One ``ray.cluster_utils.Cluster`` (a head and a worker node, each of one CPU, on
127.0.0.1) for the module; the console script connects to it as a driver and
places two shards (``--shard-cpus 0.5``, so one node can hold both after the
other is gone). Four looping clips stand in for stations, classified by the
light gtzan-mlp model at playback speed. A subscriber of ours collects every
PUBLISH message; the tests then read Redis (XADD stream, current hash) and the
driver's log.

The tests of the cluster run in file order on one running system: spread, a
configuration change, the Redis-fed dashboard in Chromium, a node removed,
then SIGTERM and nothing lost.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import FREE_AUDIO, REPO, genrestream_cmd, needs_shared

pytestmark = needs_shared

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[cluster]')")

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

CLIPS = {
    "jazz": "jazz_kevin_macleod_vibe_ace.ogg",
    "metal": "metal_el_senator_chaos_god.ogg",
    "classical": "classical_brahms_hungarian_dance_5.ogg",
    "country": "country_karissa_hobbs_lets_go_fishin.ogg",
}
ADDED = ("waltz", "waltz_setuniman_sweet_waltz.ogg")
NOW_CONFIGURED = [n for n in CLIPS if n != "country"] + [ADDED[0]]  # after the configuration change
RESUME_LIMIT_S = 30.0


def write_config(path: Path, streams: dict[str, str]) -> None:
    lines = ["[defaults]", "loop = true", ""]
    for name, clip in streams.items():
        lines += ["[[streams]]", f'name = "{name}"', f'source = "{FREE_AUDIO / clip}"', ""]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(path)


class Subscriber:
    """Every message on genrestream:events, in a thread of its own."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe("genrestream:events")
        self.events: list[dict] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message and message["type"] == "message":
                with self.lock:
                    self.events.append(json.loads(message["data"]))

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.events)

    def wait(self, predicate, timeout_s: float, what: str, start: int = 0) -> dict:
        """The first event from index ``start`` on that satisfies ``predicate``, waiting up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        seen = start
        while time.monotonic() < deadline:
            events = self.snapshot()
            for event in events[seen:]:
                if predicate(event):
                    return event
            seen = len(events)
            time.sleep(0.1)
        raise AssertionError(f"no event within {timeout_s} s: {what}")

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        self.pubsub.close()
        self.client.close()


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# ---------------------------------------------------------------- placement and arguments (no Ray needed)

def test_assignment_is_balanced_and_stable():
    from stream.cluster import assign_streams

    first = assign_streams({}, ["a", "b", "c", "d", "e"], 2)
    assert first == {"a": 0, "b": 1, "c": 0, "d": 1, "e": 0}
    # b and c go, f and g come: the others keep their shard, the newcomers fill the emptier shard first.
    second = assign_streams(first, ["a", "d", "e", "f", "g"], 2)
    assert {k: second[k] for k in "ade"} == {k: first[k] for k in "ade"}
    assert second["f"] == 1 and sorted(second.values()).count(0) in (2, 3)
    # Fewer shards than before: only the streams of the shards that went are placed again.
    third = assign_streams({"a": 0, "b": 1, "c": 2}, ["a", "b", "c"], 2)
    assert third["a"] == 0 and third["b"] == 1 and third["c"] == 0
    with pytest.raises(ValueError, match="n_shards"):
        assign_streams({}, ["a"], 0)


def test_bad_config_is_refused_before_ray_starts(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[streams]]\nname = "x"\n', encoding="utf-8")
    for config, expected in ((tmp_path / "missing.toml", "no such file"), (bad, "missing 'source'")):
        done = subprocess.run(
            genrestream_cmd("cluster", "--config", str(config), "--redis-url", "redis://127.0.0.1:9/0"),
            cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and expected in done.stderr, done.stderr


def test_run_and_dashboard_never_import_ray():
    code = ("import sys; import stream.cli, stream.engine, stream.server, stream.redis_dashboard, stream.cluster; "
            "stream.cli.build_parser(); stream.cluster.build_parser(); "
            "sys.exit('ray' in sys.modules or any(m.startswith('ray.') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=60).returncode == 0


# ---------------------------------------------------------------- a local runtime of its own

def test_local_runtime_runs_and_sigterm_stops_it(tmp_path, redis_server):
    import redis

    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushall()
    config = tmp_path / "one.toml"
    write_config(config, {"solo": CLIPS["jazz"]})
    sub = Subscriber(redis_server)
    proc = subprocess.Popen(
        genrestream_cmd("cluster", "--config", str(config), "--redis-url", redis_server, "--shards", "1",
                        "--shard-cpus", "0.5", "--num-cpus", "1", "--model", "gtzan-mlp", "--realtime"),
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        first = sub.wait(lambda e: e["type"] == "status" and e["stream"] == "solo" and e["state"] == "playing", 90,
                         "solo playing")
        assert first["worker"] == "shard-0" and first["id"] == f"solo:{first['seq']}"
        below = descendants(proc.pid)
        assert below, "the local Ray runtime runs as processes started by the command"
        # Nothing of the runtime listens beyond loopback.
        listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout.splitlines()
        ours = [line for line in listening if any(f"pid={pid}," in line for pid in below | {proc.pid})]
        assert ours, listening
        for line in ours:
            local = line.split()[3]
            assert local.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")), line
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr[-3000:]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(alive(pid) for pid in below):
            time.sleep(0.2)
        assert not [pid for pid in below if alive(pid)], "Ray's processes outlived the command"
        ended = [e for e in sub.snapshot() if e["type"] == "status" and e["stream"] == "solo" and e["state"] == "ended"]
        assert ended and ended[-1]["detail"] == "stopped", "the shard stopped its stream and flushed it to Redis"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        sub.close()


# ---------------------------------------------------------------- a two-node cluster

class Running:
    def __init__(self, cluster, worker_node, proc, sub, config: Path, log_path: Path, redis_url: str) -> None:
        self.cluster, self.worker_node, self.proc, self.sub = cluster, worker_node, proc, sub
        self.config, self.log_path, self.redis_url = config, log_path, redis_url

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def shard_nodes(self) -> dict[str, str]:
        """shard name -> the node it last came up on, from the driver's log."""
        nodes: dict[str, str] = {}
        for shard, node in re.findall(r"cluster: (shard-\d+) (?:is up|was restarted) on node ([0-9a-f]+)", self.log()):
            nodes[shard] = node
        return nodes

    def workers(self) -> dict[str, str]:
        """stream -> the shard of its latest event."""
        return {event["stream"]: event["worker"] for event in self.sub.snapshot()}


@pytest.fixture(scope="module")
def running(tmp_path_factory, redis_server):
    import redis
    from ray.cluster_utils import Cluster

    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushall()
    folder = tmp_path_factory.mktemp("cluster")
    config = folder / "streams.toml"
    write_config(config, CLIPS)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False,
        # A node whose raylet is killed is declared dead after about 3 s (default: 5 checks 3 s apart, up to 30 s).
        "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3,
                           "health_check_timeout_ms": 1000},
    })
    worker_node = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    sub = Subscriber(redis_server)
    log_path = folder / "driver.log"
    log_file = log_path.open("w")
    proc = subprocess.Popen(
        genrestream_cmd("cluster", "--config", str(config), "--redis-url", redis_server,
                        "--ray-address", cluster.address, "--shards", "2", "--shard-cpus", "0.5",
                        "--model", "gtzan-mlp", "--realtime", "--config-poll-s", "0.5"),
        cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT, text=True,
    )
    state = Running(cluster, worker_node, proc, sub, config, log_path, redis_server)
    try:
        yield state
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        log_file.close()
        sub.close()
        cluster.shutdown()


def test_streams_spread_over_both_nodes(running):
    for name in CLIPS:
        running.sub.wait(lambda e, n=name: e["type"] == "status" and e["stream"] == n and e["state"] == "playing", 90,
                         f"{name} playing")
    workers = running.workers()
    assert sorted(workers.values()) == ["shard-0", "shard-0", "shard-1", "shard-1"], workers  # balanced by count
    nodes = running.shard_nodes()
    assert set(nodes) == {"shard-0", "shard-1"}, running.log()[-3000:]
    assert {nodes["shard-0"], nodes["shard-1"]} == {running.cluster.head_node.node_id,
                                                    running.worker_node.node_id}, nodes
    for event in running.sub.snapshot():
        assert event["id"] == f"{event['stream']}:{event['seq']}" and event["worker"] in ("shard-0", "shard-1"), event


def test_config_change_touches_only_the_streams_that_changed(running):
    workers_before = running.workers()
    removed = "country"
    kept = [name for name in CLIPS if name != removed]
    mark = len(running.sub.snapshot())
    write_config(running.config, {**{n: CLIPS[n] for n in kept}, ADDED[0]: ADDED[1]})
    ended = running.sub.wait(lambda e: e["type"] == "status" and e["stream"] == removed and e["state"] == "ended",
                             30, "the removed stream ends")
    assert ended["detail"] == "removed"
    added = running.sub.wait(lambda e: e["type"] == "status" and e["stream"] == ADDED[0] and e["state"] == "playing",
                             60, "the added stream playing")
    # The new stream went to the shard that had lost one.
    assert added["worker"] == workers_before[removed]
    after = running.sub.snapshot()[mark:]
    for name in kept:
        restarts = [e for e in after if e["stream"] == name and e["type"] == "status"]
        assert restarts == [], f"{name} was touched: {restarts}"
        assert running.workers()[name] == workers_before[name]


def test_sighup_reloads_the_model_on_every_shard_and_no_stream_stops(running):
    mark = len(running.sub.snapshot())
    running.proc.send_signal(signal.SIGHUP)
    for name in NOW_CONFIGURED:
        swapped = running.sub.wait(lambda e, n=name: e["type"] == "status" and e["stream"] == n and "model" in e,
                                   30, f"{name} names its new model", start=mark)
        assert swapped["model"].startswith("gtzan-mlp@") and swapped["state"] == "playing", swapped
    after = running.sub.snapshot()[mark:]
    assert not [e for e in after if e["type"] == "status" and e["state"] in ("connecting", "ended")], after
    assert running.proc.poll() is None


def test_redis_fed_dashboard_shows_every_stream(running):
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip(f"{chromium} is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from tests.test_dashboard_redis import CHROMIUM_ARGS, serve_dashboard

    names = NOW_CONFIGURED
    with serve_dashboard(running.redis_url) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(url)
            for name in names:
                card = page.locator(f'[data-stream="{name}"]')
                sync_api.expect(card).to_have_count(1, timeout=60_000)
                sync_api.expect(card.locator(".state")).to_have_text("playing", timeout=60_000)
            for name in names:  # live predictions (PUBLISH) reach the page: each card shows a genre
                genre = page.locator(f'[data-stream="{name}"] .genre')
                sync_api.expect(genre).to_have_text(re.compile(r"^(?!—$)\S.*"), timeout=60_000)
            page.screenshot(path="/tmp/dashboard_cluster.png")
        finally:
            browser.close()


def test_removed_node_moves_its_streams_and_the_others_carry_on(running):
    nodes = running.shard_nodes()
    on_worker = next(shard for shard, node in nodes.items() if node == running.worker_node.node_id)
    workers = {name: shard for name, shard in running.workers().items() if name in NOW_CONFIGURED}
    moved = sorted(name for name, shard in workers.items() if shard == on_worker)
    stayed = sorted(name for name, shard in workers.items() if shard != on_worker)
    assert moved and stayed, running.workers()
    for name in moved:  # each has been classified before its node goes
        running.sub.wait(lambda e, n=name: e["type"] == "prediction" and e["stream"] == n, 60, f"{name} classified")
    time.sleep(2.5)  # the driver learns each stream's time from the shards' heartbeats, one a second
    mark = len(running.sub.snapshot())
    removed_at = time.monotonic()
    running.cluster.remove_node(running.worker_node, allow_graceful=False)  # its processes are killed
    before = running.sub.snapshot()[:mark]
    for name in moved:
        gap = running.sub.wait(lambda e, n=name: e["type"] == "status" and e["stream"] == n and "gap_s" in e,
                               RESUME_LIMIT_S, f"a status naming the gap of {name}", start=mark)
        assert "shard restart" in gap["detail"] and f"gap of {gap['gap_s']:.1f} s" in gap["detail"], gap
        assert gap["gap_s"] > 0
        resumed = running.sub.wait(lambda e, n=name, after=gap["seq"]: e["type"] == "prediction" and e["stream"] == n
                                   and e["seq"] > after,
                                   max(1.0, RESUME_LIMIT_S - (time.monotonic() - removed_at)), f"{name} resumes",
                                   start=mark)
        # stream time goes on across the gap, as after a reconnect: it never goes back
        last_before = max(e["stream_time_s"] for e in before if e["stream"] == name and e["type"] == "prediction")
        assert resumed["stream_time_s"] > last_before + gap["gap_s"] * 0.5, (last_before, gap, resumed)
    nodes_after = running.shard_nodes()
    assert nodes_after[on_worker] == running.cluster.head_node.node_id, nodes_after
    after = running.sub.snapshot()[mark:]
    for name in stayed:
        assert not [e for e in after if e["stream"] == name and e["type"] == "status"], f"{name} was disturbed"
        assert any(e["stream"] == name and e["type"] == "prediction" for e in after), f"{name} stopped"


def test_sigterm_stops_every_shard_and_nothing_emitted_is_lost(running):
    import redis

    # Changes from both shards (a first change comes some 15 s into a stream; usually there already).
    running.sub.wait(lambda e: e["type"] == "genre_change" and e["worker"] == "shard-0", 40, "a change from shard-0")
    running.sub.wait(lambda e: e["type"] == "genre_change" and e["worker"] == "shard-1", 40, "a change from shard-1")
    running.proc.send_signal(signal.SIGTERM)
    assert running.proc.wait(timeout=60) == 0, running.log()[-3000:]
    time.sleep(0.5)  # the last PUBLISH messages reach our subscriber
    published = {e["id"]: e for e in running.sub.snapshot() if e["type"] == "genre_change"}
    r = redis.Redis.from_url(running.redis_url, decode_responses=True)
    stored = [json.loads(fields["event"]) for _, fields in r.xrange("genrestream:events")]
    stored_ids = {e["id"] for e in stored if e["type"] == "genre_change"}
    assert {e["worker"] for e in published.values()} == {"shard-0", "shard-1"}, published
    assert set(published) <= stored_ids, sorted(set(published) - stored_ids)
    ended = {e["stream"] for e in stored if e["type"] == "status" and e["state"] == "ended"}
    assert ended >= set(NOW_CONFIGURED), "every shard stopped its streams"
    current = r.hgetall("genrestream:current")
    for name, payload in current.items():
        latest = max((e for e in published.values() if e["stream"] == name), key=lambda e: e["seq"], default=None)
        assert latest is not None and json.loads(payload)["id"] == latest["id"], name
