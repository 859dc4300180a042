"""Browser tests of the dashboard (dashboard/static) in a real headless Chromium.

A fixture server (tests/dashboard_fake_server.py) serves the static files and a
WebSocket at /ws on one free loopback port, like genrestream's real server, and
sends scripted events in the real schema. Playwright drives Debian's Chromium.

Run:  .venv/bin/python -m pytest tests/test_dashboard_browser.py -q
Writes a screenshot of a realistic scene to /tmp/dashboard.png, and of two of
its cards (tags and speech in the timeline; the speech state) to
/tmp/dashboard_card_tags.png and /tmp/dashboard_card_speech.png.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the project need not be pip-installed to run this
    sys.path.insert(0, str(ROOT))

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOT = Path("/tmp/dashboard.png")
CARD_SCREENSHOTS = {"radio1": Path("/tmp/dashboard_card_tags.png"),
                    "talk-am": Path("/tmp/dashboard_card_speech.png")}

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytest.importorskip("websockets.asyncio.server", reason="websockets >= 14 is required by the fixture server")

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

from dashboard import STATIC_DIR  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dashboard_fake_server import (  # noqa: E402
    FakeDashboardServer, content_probabilities, genre_change, prediction, probabilities, status,
)

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
expect.set_options(timeout=5_000)


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def server():
    with FakeDashboardServer(STATIC_DIR) as s:
        yield s


class Watched:
    """A page plus everything it logged or requested."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.requests: list[str] = []
        self.failed: list[str] = []
        self.responses: dict[str, tuple[int, str]] = {}
        self.dialogs: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("requestfailed", lambda r: self.failed.append(f"{r.url} {r.failure}"))
        page.on("response", lambda r: self.responses.__setitem__(
            urlsplit(r.url).path, (r.status, r.headers.get("content-type", ""))))
        page.on("websocket", lambda ws: self.requests.append(ws.url))

        def on_dialog(d):
            self.dialogs.append(d.message)
            d.dismiss()
        page.on("dialog", on_dialog)

    def foreign_requests(self) -> list[str]:
        return [u for u in self.requests if urlsplit(u).hostname not in LOOPBACK]

    def assert_clean(self, allow_console: str | None = None) -> None:
        errors = [e for e in self.console_errors if not (allow_console and re.search(allow_console, e))]
        assert errors == [], f"console errors: {errors}"
        assert self.page_errors == [], f"uncaught page errors: {self.page_errors}"
        assert self.foreign_requests() == [], f"requests to non-loopback hosts: {self.foreign_requests()}"
        assert self.dialogs == [], f"unexpected dialogs: {self.dialogs}"
        if allow_console is None:
            assert self.failed == [], f"failed requests: {self.failed}"


@pytest.fixture(scope="module")
def context(browser):
    # One context for the module (creating one costs ~0.5 s); each test gets a
    # fresh page, and the dashboard keeps no storage, so tests stay independent.
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
    yield ctx
    ctx.close()


@pytest.fixture
def watched(context):
    page = context.new_page()
    w = Watched(page)
    yield w
    page.close()


def open_dashboard(w: Watched, server: FakeDashboardServer) -> Page:
    page = w.page
    page.goto(server.url)
    wait_text(page, "#connection", "connected")
    server.wait_for_clients(1)
    return page


def card_sel(stream: str, inner: str = "") -> str:
    return f"[data-stream={json.dumps(stream)}] {inner}".strip()


def card(page: Page, stream: str):
    return page.locator(card_sel(stream))


# expect() retries after 100, 250, 500 and then every 1000 ms; after each batch
# of events these barriers poll every 20 ms instead, so the expect() calls that
# follow usually pass at their first try and the module stays fast.
def wait_text(page: Page, selector: str, text: str, timeout: float = 5_000) -> None:
    page.wait_for_function(
        "([sel, text]) => { const e = document.querySelector(sel); return !!e && e.textContent === text; }",
        arg=[selector, text], polling=20, timeout=timeout)


def wait_count(page: Page, selector: str, n: int, timeout: float = 5_000) -> None:
    page.wait_for_function("([sel, n]) => document.querySelectorAll(sel).length === n",
                           arg=[selector, n], polling=20, timeout=timeout)


def segments(page: Page, stream: str):
    return card(page, stream).locator(".timeline .seg")


# ------------------------------------------------------------------- tests

def test_page_loads_cleanly_and_connects(watched, server):
    page = open_dashboard(watched, server)
    expect(page).to_have_title(re.compile("genrestream"))
    expect(page.locator("#empty")).to_be_visible()
    assert page.locator("[data-stream]").count() == 0
    for path, ctype in [("/", "text/html"), ("/app.js", "javascript"), ("/style.css", "text/css")]:
        assert path in watched.responses, f"{path} was not requested: {watched.responses}"
        code, got = watched.responses[path]
        assert code == 200 and ctype in got, (path, code, got)
    # The stylesheet really applied (dark background), i.e. CSP and MIME type are right.
    bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(11, 14, 19)", bg
    # The WebSocket went to the page's own host and port.
    assert f"ws://127.0.0.1:{server.port}/ws" in watched.requests
    watched.assert_clean()


def test_snapshot_fills_card_on_connect(watched, server):
    server.send(
        status("radio1", "playing", "connected, 128 kbps mp3", source="http://127.0.0.1:9/radio1",
               stats={"bytes_read": 123456, "seconds_decoded": 61.25, "reconnects": 0, "last_error": None}),
        genre_change("radio1", 40.0, "jazz", "unknown", onset_s=31.5, confidence=0.7),
        prediction("radio1", 41.0, "jazz", confidence=0.83, title="Miles Davis – So What"),
    )
    page = open_dashboard(watched, server)
    wait_text(page, card_sel("radio1", ".genre"), "jazz")
    c = card(page, "radio1")
    expect(c).to_have_count(1)
    expect(c.locator(".genre")).to_have_text("jazz")
    expect(c.locator(".confidence")).to_have_text("83%")
    expect(c.locator(".state")).to_have_text("playing")
    expect(c.locator(".detail")).to_have_text("connected, 128 kbps mp3")
    expect(c.locator(".title")).to_have_text("Miles Davis – So What")
    expect(c.locator(".probs .prob")).to_have_count(10)
    expect(c.locator(".probs .prob.top")).to_have_attribute("data-label", "jazz")
    expect(c.locator(".stats")).to_contain_text("bytes read")
    expect(c.locator(".stats")).to_contain_text("123,456")
    expect(c.locator(".stats")).to_contain_text("http://127.0.0.1:9/radio1")
    expect(segments(page, "radio1")).to_have_count(1)
    expect(c.locator(".timeline .marker")).to_have_count(1)
    expect(page.locator("#empty")).to_be_hidden()
    watched.assert_clean()


def test_live_genre_change_updates_genre_and_timeline(watched, server):
    page = open_dashboard(watched, server)
    server.send(status("radio1", "playing", "ok"),
                *[prediction("radio1", t, "jazz", confidence=0.8) for t in range(1, 6)])
    wait_count(page, card_sel("radio1", ".timeline .seg"), 5)
    c = card(page, "radio1")
    expect(c.locator(".genre")).to_have_text("jazz")
    expect(segments(page, "radio1")).to_have_count(5)
    expect(c.locator(".timeline .marker")).to_have_count(0)

    server.send(genre_change("radio1", 6.0, "rock", "jazz", onset_s=4.5, confidence=0.7),
                *[prediction("radio1", t, "rock", confidence=0.9) for t in range(6, 10)],
                # This window's top is metal, but the smoother still says rock.
                prediction("radio1", 10, "rock", genre="metal", confidence=0.9))
    wait_count(page, card_sel("radio1", ".timeline .seg"), 10)
    expect(c.locator(".probs .prob.top")).to_have_attribute("data-label", "metal")
    expect(c.locator(".genre")).to_have_text("rock")
    expect(c.locator(".confidence")).to_have_text("90%")
    expect(segments(page, "radio1")).to_have_count(10)
    expect(segments(page, "radio1").last).to_have_attribute("data-genre", "rock")
    expect(segments(page, "radio1").first).to_have_attribute("data-genre", "jazz")
    expect(c.locator(".timeline .marker")).to_have_count(1)

    colours = page.evaluate("""() => {
        const segs = [...document.querySelectorAll('[data-stream="radio1"] .timeline .seg')];
        const swatch = g => getComputedStyle(document.querySelector(
            `#legend .legend-item[data-genre="${g}"] .legend-swatch`)).backgroundColor;
        return {jazz: getComputedStyle(segs[0]).backgroundColor,
                rock: getComputedStyle(segs[segs.length - 1]).backgroundColor,
                legendJazz: swatch("jazz"), legendRock: swatch("rock")};
    }""")
    assert colours["jazz"] != colours["rock"], colours
    assert colours["jazz"] == colours["legendJazz"] and colours["rock"] == colours["legendRock"], colours

    # The big genre is the smoother's state, not this window's top genre.
    server.send(prediction("radio1", 11, "unknown", genre="metal", confidence=0.4))
    wait_count(page, card_sel("radio1", ".timeline .seg"), 11)
    expect(c.locator(".genre")).to_have_text("unknown")
    expect(c.locator(".confidence")).to_have_text("40%")
    expect(segments(page, "radio1").last).to_have_attribute("data-genre", "unknown")

    # A stream with only a genre_change (no prediction yet) falls back to its genre.
    server.send(genre_change("radio9", 20.0, "pop", "unknown", confidence=0.64))
    wait_text(page, card_sel("radio9", ".genre"), "pop")
    expect(card(page, "radio9").locator(".genre")).to_have_text("pop")
    expect(card(page, "radio9").locator(".confidence")).to_have_text("64%")
    watched.assert_clean()


def test_failed_status_is_shown_in_red(watched, server):
    page = open_dashboard(watched, server)
    server.send(status("radio1", "playing", "ok"), prediction("radio1", 1.0, "blues"))
    wait_text(page, card_sel("radio1", ".state"), "playing")
    state = card(page, "radio1").locator(".state")
    expect(state).to_have_text("playing")
    playing_bg = state.evaluate("e => getComputedStyle(e).backgroundColor")

    server.send(status("radio1", "failed", "HTTP 404 Not Found after 5 reconnects",
                       stats={"reconnects": 5, "last_error": "HTTP 404"}))
    wait_text(page, card_sel("radio1", ".state"), "failed")
    expect(state).to_have_text("failed")
    expect(state).to_have_attribute("data-state", "failed")
    expect(card(page, "radio1")).to_have_attribute("data-state", "failed")
    expect(card(page, "radio1").locator(".detail")).to_have_text("HTTP 404 Not Found after 5 reconnects")
    expect(card(page, "radio1").locator(".stats")).to_contain_text("HTTP 404")
    failed_bg = state.evaluate("e => getComputedStyle(e).backgroundColor")
    r, g, b = map(int, re.findall(r"\d+", failed_bg)[:3])
    assert failed_bg != playing_bg and r > 150 and g < 90 and b < 90, failed_bg
    expect(page.locator("#summary")).to_contain_text("1 failed")
    watched.assert_clean()


def test_streams_get_one_card_each_sorted_by_name(watched, server):
    page = open_dashboard(watched, server)
    server.send(prediction("radio2", 1.0, "metal", confidence=0.91),
                prediction("radio1", 1.0, "reggae", confidence=0.55),
                status("alpha", "connecting", "opening http://…"))
    wait_count(page, "[data-stream]", 3)
    expect(page.locator("[data-stream]")).to_have_count(3)
    names = page.locator("[data-stream]").evaluate_all("els => els.map(e => e.dataset.stream)")
    assert names == ["alpha", "radio1", "radio2"]
    expect(card(page, "radio1").locator(".genre")).to_have_text("reggae")
    expect(card(page, "radio2").locator(".genre")).to_have_text("metal")
    expect(card(page, "radio2").locator(".confidence")).to_have_text("91%")
    expect(card(page, "alpha").locator(".state")).to_have_text("connecting")
    expect(card(page, "alpha").locator(".genre")).to_have_text("—")
    watched.assert_clean()


def test_event_text_is_escaped(watched, server):
    evil = '<img src=x onerror="alert(1)">'
    page = open_dashboard(watched, server)
    server.send(status(evil, "playing", "<b>detail</b>", stats={"<i>k</i>": "<script>alert(2)</script>"}),
                prediction(evil, 1.0, "<u>genre</u>", title='<b>bold</b> & "quotes"',
                           probs={"<svg onload=alert(3)>": 0.9, "jazz": 0.1}))
    wait_text(page, card_sel(evil, ".title"), '<b>bold</b> & "quotes"')
    expect(page.locator("[data-stream]")).to_have_count(1)
    texts = page.locator("[data-stream]").evaluate("""c => ({
        stream: c.dataset.stream,
        name: c.querySelector('.name').textContent,
        genre: c.querySelector('.genre').textContent,
        title: c.querySelector('.title').textContent,
        detail: c.querySelector('.detail').textContent,
        stats: c.querySelector('.stats').textContent,
        label: c.querySelector('.prob .label').textContent,
        injected: c.querySelectorAll('img, b, i, u, svg:not(.talk-icon), script').length,
    })""")
    assert texts == {
        "stream": evil, "name": evil, "genre": "<u>genre</u>", "title": '<b>bold</b> & "quotes"',
        "detail": "<b>detail</b>", "stats": "<i>k</i><script>alert(2)</script>",
        "label": "<svg onload=alert(3)>", "injected": 0,
    }, texts
    page.wait_for_timeout(200)
    watched.assert_clean()


def test_unknown_and_malformed_messages_are_ignored(watched, server):
    page = open_dashboard(watched, server)
    server.send_raw(
        "not json", "[1, 2]", "null", '"text"',
        json.dumps({"schema": 1, "type": "hello", "server": "x"}),
        json.dumps({"schema": 1, "type": "mystery", "stream": "ghost1"}),
        json.dumps({"schema": 2, "type": "prediction", "stream": "ghost2", "smoothed": "rock"}),
        json.dumps({"schema": 1, "type": "prediction"}),
        json.dumps({"schema": 1, "type": "prediction", "stream": "radio1", "stream_time_s": "soon",
                    "probabilities": None, "smoothed": 5, "confidence": "high"}),
    )
    server.send(prediction("radio1", 3.0, "disco", confidence=0.75),
                {"schema": 1, "type": "metadata", "stream": "radio1", "title": "Bee Gees – Stayin' Alive"})
    wait_text(page, card_sel("radio1", ".title"), "Bee Gees – Stayin' Alive")
    expect(card(page, "radio1").locator(".genre")).to_have_text("disco")
    expect(card(page, "radio1").locator(".confidence")).to_have_text("75%")
    expect(card(page, "radio1").locator(".title")).to_have_text("Bee Gees – Stayin' Alive")
    expect(page.locator("[data-stream]")).to_have_count(1)
    expect(segments(page, "radio1")).to_have_count(1)
    watched.assert_clean()


def test_reconnects_with_backoff_and_resyncs(watched, server):
    page = open_dashboard(watched, server)
    server.send(status("radio1", "playing", "ok"),
                *[prediction("radio1", t, "jazz") for t in (1, 2, 3)])
    wait_count(page, card_sel("radio1", ".timeline .seg"), 3)
    expect(segments(page, "radio1")).to_have_count(3)

    server.accepting = False
    server.drop_clients()
    wait_text(page, "#connection", "disconnected")
    expect(page.locator("#connection-pill")).to_have_attribute("data-state", re.compile("disconnected|connecting"))
    expect(page.locator("#reconnect")).to_contain_text("reconnecting")
    # Events while the page is away only reach it through the snapshot.
    server.send(prediction("radio1", 4.0, "jazz"), genre_change("radio1", 5.0, "country", "jazz", onset_s=4.0),
                prediction("radio1", 5.0, "country", confidence=0.66))
    page.wait_for_timeout(700)  # at least one refused attempt (the first comes after ~0.5 s)
    expect(page.locator("#connection")).to_have_text("disconnected")

    server.accepting = True
    wait_text(page, "#connection", "connected", timeout=8_000)
    wait_text(page, card_sel("radio1", ".genre"), "country")
    expect(card(page, "radio1").locator(".genre")).to_have_text("country")
    expect(card(page, "radio1").locator(".confidence")).to_have_text("66%")
    expect(segments(page, "radio1")).to_have_count(4)  # 1, 2, 3 and 5
    expect(card(page, "radio1").locator(".timeline .marker")).to_have_count(1)
    expect(page.locator("[data-stream]")).to_have_count(1)

    # Another drop: the snapshot repeats what the page has; nothing is added twice.
    before = server.connections
    server.drop_clients()
    deadline = time.monotonic() + 8
    while server.connections == before or server.client_count() == 0:
        assert time.monotonic() < deadline, "the page did not reconnect"
        time.sleep(0.05)
    expect(page.locator("#connection")).to_have_text("connected")
    page.wait_for_timeout(300)
    expect(segments(page, "radio1")).to_have_count(4)
    expect(card(page, "radio1").locator(".timeline .marker")).to_have_count(1)
    # A refused handshake is logged by Chromium itself; nothing else may be.
    watched.assert_clean(allow_console=r"WebSocket connection to 'ws://127\.0\.0\.1:\d+/ws' failed")


def test_hundred_streams_and_history_is_capped(watched, server):
    page = open_dashboard(watched, server)
    names = [f"s{i:03d}" for i in range(100)]
    started = time.monotonic()
    server.send(*[status(n, "playing", "ok") for n in names],
                *[prediction(n, t, "rock" if i % 2 else "pop") for t in (1, 2, 3) for i, n in enumerate(names)])
    wait_count(page, "[data-stream]", 100)
    wait_count(page, card_sel("s099", ".timeline .seg"), 3)
    expect(segments(page, "s099")).to_have_count(3)
    # Generous (a loaded CI box is slow); an O(n^2) render would still blow it.
    assert time.monotonic() - started < 10

    # 400 s of one-second hops: only the last ~5 minutes stay in the DOM.
    server.send(*[prediction("s000", t, ("jazz", "blues", "unknown", "silence")[(t // 50) % 4])
                  for t in range(4, 404)])
    wait_text(page, card_sel("s000", ".axis-now"), "6:43")
    expect(card(page, "s000").locator(".axis-now")).to_have_text("6:43")
    n = segments(page, "s000").count()
    assert 280 <= n <= 302, n
    # The newest segment ends at the strip's right edge; the strip spans ~300 s.
    geo = card(page, "s000").evaluate("""c => {
        const strip = c.querySelector('.timeline-strip').getBoundingClientRect();
        const segs = c.querySelectorAll('.timeline .seg');
        const last = segs[segs.length - 1].getBoundingClientRect();
        return {stripLeft: strip.left, stripRight: strip.right, lastLeft: last.left,
                lastRight: last.right, width: strip.width};
    }""")
    assert abs(geo["lastRight"] - geo["stripRight"]) < geo["width"] * 0.01, geo
    assert abs((geo["lastRight"] - geo["lastLeft"]) - geo["width"] / 300) < geo["width"] * 0.004, geo
    watched.assert_clean()


MUSIC = content_probabilities(0.04, 0.03)
TALK = content_probabilities(0.91, 0.04)
TAGS = [("electronic", 0.71), ("dance", 0.55), ("House", 0.31), ("techno", 0.2), ("ambient", 0.1)]


def card_texts(page: Page, stream: str, inner: str) -> list[str]:
    return card(page, stream).locator(inner).evaluate_all("els => els.map(e => e.textContent)")


def test_speech_is_drawn_as_speech(watched, server):
    page = open_dashboard(watched, server)
    server.send(status("talk1", "playing", "ok"),
                *[prediction("talk1", t, "rock", confidence=0.8, content=MUSIC, tags=TAGS) for t in range(1, 6)])
    wait_count(page, card_sel("talk1", ".timeline .seg"), 5)
    c = card(page, "talk1")
    expect(c.locator(".genre")).to_have_text("rock")
    expect(c).not_to_have_class(re.compile(r"\bspeech\b"))
    expect(c.locator(".talk-icon")).to_be_hidden()

    # music -> speech: the smoother says speech, this window's top genre is still hiphop.
    server.send(genre_change("talk1", 6.0, "speech", "rock", onset_s=5.0, confidence=0.88, content=TALK),
                *[prediction("talk1", t, "speech", genre="hiphop", confidence=0.9, content=TALK, tags=TAGS)
                  for t in range(6, 11)])
    wait_count(page, card_sel("talk1", ".timeline .seg"), 10)
    expect(c.locator(".genre")).to_have_text("speech")
    expect(c.locator(".genre")).to_have_attribute("data-genre", "speech")
    expect(c).to_have_class(re.compile(r"\bspeech\b"))
    expect(c.locator(".talk-icon")).to_be_visible()
    expect(c.locator(".badge")).to_have_attribute("title", re.compile("speech"))
    expect(c.locator(".confidence")).to_have_text("90%")
    expect(c.locator(".timeline .marker")).to_have_attribute("title", re.compile("rock → speech"))
    expect(c.locator('.timeline .seg[data-genre="speech"]')).to_have_count(5)
    # The content bars say why: speech on top, as text.
    expect(c.locator(".content")).to_be_visible()
    assert card_texts(page, "talk1", ".content .c-item") == ["music 5%", "speech 91%", "other 4%"]
    expect(c.locator(".content .c-item.top")).to_have_attribute("data-label", "speech")
    # The legend names speech, next to the other non-genres.
    legend = page.locator("#legend .legend-item").evaluate_all("els => els.map(e => e.textContent)")
    assert legend[-3:] == ["speech", "unknown", "silence"], legend

    # speech -> music again.
    server.send(genre_change("talk1", 11.0, "rock", "speech", onset_s=10.5, confidence=0.7, content=MUSIC),
                *[prediction("talk1", t, "rock", confidence=0.85, content=MUSIC, tags=TAGS) for t in range(11, 14)])
    wait_count(page, card_sel("talk1", ".timeline .seg"), 13)
    expect(c.locator(".genre")).to_have_text("rock")
    expect(c).not_to_have_class(re.compile(r"\bspeech\b"))
    expect(c.locator(".talk-icon")).to_be_hidden()
    expect(c.locator(".content .c-item.top")).to_have_attribute("data-label", "music")
    order = segments(page, "talk1").evaluate_all("els => els.map(e => e.dataset.genre)")
    assert order == ["rock"] * 5 + ["speech"] * 5 + ["rock"] * 3, order

    # Speech differs from music by shape (a narrower band) and colour, not colour alone,
    # and its colour matches the legend's.
    geo = c.evaluate("""c => {
        const segs = [...c.querySelectorAll('.timeline .seg')];
        const box = e => e.getBoundingClientRect();
        const bg = e => getComputedStyle(e).backgroundColor;
        const sw = g => document.querySelector(`#legend .legend-item[data-genre="${g}"] .legend-swatch`);
        return {musicH: box(segs[0]).height, speechH: box(segs[6]).height,
                music: bg(segs[0]), speech: bg(segs[6]), legendSpeech: bg(sw("speech")),
                unknown: bg(sw("unknown")), silence: bg(sw("silence"))};
    }""")
    assert geo["speechH"] < 0.7 * geo["musicH"], geo
    assert geo["speech"] == geo["legendSpeech"], geo
    assert len({geo["music"], geo["speech"], geo["unknown"], geo["silence"]}) == 4, geo
    watched.assert_clean()


def test_top_tags_are_shown_in_order_and_follow_predictions(watched, server):
    page = open_dashboard(watched, server)
    server.send(status("club", "playing", "ok"), prediction("club", 1.0, "disco", content=MUSIC, tags=TAGS))
    wait_count(page, card_sel("club", ".tags .tag"), 5)
    c = card(page, "club")
    expect(c.locator(".tags-box")).to_be_visible()
    assert card_texts(page, "club", ".tags .tag") == [
        "electronic 71%", "dance 55%", "House 31%", "techno 20%", "ambient 10%"]
    tags = c.locator(".tags .tag").evaluate_all("els => els.map(e => e.dataset.tag)")
    assert tags == ["electronic", "dance", "House", "techno", "ambient"]
    # Each chip's bar is as long as its probability.
    ratios = c.locator(".tags .tag").evaluate_all(
        "els => els.map(e => e.querySelector('.tag-fill').getBoundingClientRect().width / e.getBoundingClientRect().width)")
    for got, (_, p) in zip(ratios, TAGS):
        assert abs(got - p) < 0.02, (ratios, TAGS)
    expect(c.locator(".tags")).to_have_attribute("aria-label", re.compile("tags", re.IGNORECASE))

    # The next prediction brings other tags, in another order: the chips follow.
    new = [("Hip-Hop", 0.64), ("electronic", 0.42), ("rnb", 0.28), ("party", 0.15), ("00s", 0.05)]
    server.send(prediction("club", 2.0, "hiphop", content=MUSIC, tags=new))
    wait_text(page, card_sel("club", ".tags .tag"), "Hip-Hop 64%")
    assert card_texts(page, "club", ".tags .tag") == [
        "Hip-Hop 64%", "electronic 42%", "rnb 28%", "party 15%", "00s 5%"]
    expect(c.locator(".tags .tag")).to_have_count(5)

    # At most five, malformed entries skipped, and gone when a prediction has none.
    server.send(prediction("club", 3.0, "hiphop", content=MUSIC,
                           tags=[("pop", 0.5), ("x", "high"), ("", 0.4)] + [(f"t{i}", 0.3) for i in range(6)]))
    wait_text(page, card_sel("club", ".tags .tag"), "pop 50%")
    assert card_texts(page, "club", ".tags .tag") == ["pop 50%", "t0 30%", "t1 30%", "t2 30%", "t3 30%"]
    server.send(prediction("club", 4.0, "hiphop"))
    wait_count(page, card_sel("club", ".tags .tag"), 0)
    expect(c.locator(".tags-box")).to_be_hidden()
    expect(c.locator(".content")).to_be_hidden()
    watched.assert_clean()


def test_stream_without_tags_or_content_shows_neither(watched, server):
    page = open_dashboard(watched, server)
    # The old model (gtzan-mlp): no content, no tags, no speech.
    server.send(status("old", "playing", "ok"),
                genre_change("old", 4.0, "jazz", "unknown", onset_s=1.0),
                *[prediction("old", t, "jazz", confidence=0.77) for t in range(1, 6)])
    wait_count(page, card_sel("old", ".timeline .seg"), 5)
    c = card(page, "old")
    expect(c.locator(".genre")).to_have_text("jazz")
    expect(c.locator(".tags-box")).to_be_hidden()
    expect(c.locator(".tags .tag")).to_have_count(0)
    expect(c.locator(".content")).to_be_hidden()
    expect(c.locator(".content .c-item")).to_have_count(0)
    expect(c.locator(".talk-icon")).to_be_hidden()
    expect(page.locator('#legend .legend-item[data-genre="speech"]')).to_have_count(0)
    # Beside a stream of the new model, it stays as it was.
    server.send(prediction("new", 1.0, "rock", content=MUSIC, tags=TAGS))
    wait_count(page, card_sel("new", ".tags .tag"), 5)
    expect(card(page, "new").locator(".content")).to_be_visible()
    expect(c.locator(".tags-box")).to_be_hidden()
    expect(c.locator(".content")).to_be_hidden()
    page.wait_for_timeout(200)
    watched.assert_clean()


def test_tag_and_content_text_is_escaped(watched, server):
    evil_tag = '<img src=x onerror="alert(1)">'
    evil_label = "<svg onload=alert(2)>"
    page = open_dashboard(watched, server)
    server.send(prediction("radio1", 1.0, "speech", content={"music": 0.1, evil_label: 0.9},
                           tags=[(evil_tag, 0.6), ("<b>bold</b> & co", 0.3)]))
    wait_count(page, card_sel("radio1", ".tags .tag"), 2)
    got = card(page, "radio1").evaluate("""c => ({
        tags: [...c.querySelectorAll('.tags .tag-label')].map(e => e.textContent),
        dataTag: c.querySelector('.tags .tag').dataset.tag,
        content: [...c.querySelectorAll('.content .c-label')].map(e => e.textContent),
        injected: c.querySelectorAll('img, b, svg:not(.talk-icon), script').length,
    })""")
    assert got == {"tags": [evil_tag, "<b>bold</b> & co"], "dataTag": evil_tag,
                   "content": ["music", evil_label], "injected": 0}, got
    page.wait_for_timeout(200)
    watched.assert_clean()


# Plausible MSD tags for each state of the screenshot scene.
SCENE_TAGS = {
    "disco": ["dance", "80s", "funk", "party", "pop"],
    "pop": ["pop", "dance", "female vocalists", "catchy", "00s"],
    "hiphop": ["Hip-Hop", "rnb", "party", "sexy", "00s"],
    "jazz": ["jazz", "instrumental", "Mellow", "chillout", "easy listening"],
    "blues": ["blues", "guitar", "classic rock", "oldies", "soul"],
    "rock": ["rock", "classic rock", "hard rock", "guitar", "70s"],
    "metal": ["metal", "heavy metal", "hard rock", "rock", "Progressive rock"],
    "country": ["country", "folk", "acoustic", "oldies", "male vocalists"],
    "reggae": ["chill", "oldies", "happy", "70s", "acoustic"],
    "classical": ["instrumental", "beautiful", "ambient", "Mellow", "experimental"],
    "speech": ["experimental", "male vocalists", "ambient", "oldies", "indie"],
    "silence": ["ambient", "experimental", "chillout", "instrumental", "beautiful"],
}


def _jitter(t: int, k: int) -> float:
    """Deterministic noise in [0, 1) for second ``t`` and channel ``k``."""
    return ((t * 7919 + k * 104729) % 100) / 100


def scene_content(state: str, t: int) -> dict[str, float]:
    if state == "speech":
        return content_probabilities(round(0.8 + 0.15 * _jitter(t, 1), 2), 0.03)
    if state == "silence":
        return content_probabilities(0.1, round(0.6 + 0.2 * _jitter(t, 1), 2))
    return content_probabilities(round(0.02 + 0.08 * _jitter(t, 1), 2), 0.03)


def scene_events():
    """A few minutes of a realistic session on six streams."""
    events = [
        status("club-main", "playing", "connected · 320 kbps mp3", source="http://127.0.0.1:8000/club-main",
               stats={"bytes_read": 11_534_336, "seconds_decoded": 288.0, "reconnects": 0, "overflows": 0}),
        status("jazz-fm", "playing", "connected · 128 kbps aac", source="http://127.0.0.1:8000/jazz",
               stats={"bytes_read": 4_612_000, "seconds_decoded": 290.5, "reconnects": 1}),
        status("radio1", "playing", "connected · 192 kbps mp3",
               stats={"bytes_read": 6_912_000, "seconds_decoded": 288.0, "reconnects": 0}),
        status("rooftop", "reconnecting", "connection reset; retry 2 in 4 s",
               stats={"reconnects": 2, "last_error": "ConnectionResetError"}),
        status("studio-b", "failed", "HTTP 404 Not Found after 5 attempts",
               stats={"reconnects": 5, "last_error": "HTTP Error 404"}),
        status("talk-am", "playing", "connected · 64 kbps mp3", stats={"seconds_decoded": 290.0}),
    ]
    plans = {
        "club-main": [(0, "disco"), (70, "pop"), (150, "hiphop"), (230, "disco")],
        "jazz-fm": [(0, "jazz"), (120, "blues"), (200, "jazz")],
        "radio1": [(0, "rock"), (60, "metal"), (95, "rock"), (150, "speech"), (180, "pop"), (250, "country")],
        "rooftop": [(0, "reggae"), (100, "silence"), (110, "reggae")],
        "studio-b": [(0, "classical")],
        "talk-am": [(0, "speech"), (95, "pop"), (130, "speech"), (200, "silence"), (215, "speech")],
    }
    titles = {"club-main": "Daft Punk – One More Time", "jazz-fm": "Bill Evans – Peace Piece",
              "radio1": "Johnny Cash – Ring of Fire", "rooftop": "Bob Marley – Is This Love"}
    ends = {"club-main": 290, "jazz-fm": 290, "radio1": 290, "rooftop": 170, "studio-b": 45, "talk-am": 290}
    for stream, plan in plans.items():
        prev = "unknown"
        for i, (start, genre) in enumerate(plan):
            stop = plan[i + 1][0] if i + 1 < len(plan) else ends[stream]
            if start:
                events.append(genre_change(stream, start + 8.0, genre, prev, onset_s=float(start),
                                           content=scene_content(genre, start + 8), model="musicnn-msd@1"))
            for t in range(start + 1, stop + 1):
                conf = 0.62 + 0.3 * _jitter(t, 0)
                probs = probabilities(genre if genre in probabilities("rock") else "rock", conf)
                if genre in ("unknown", "silence", "speech"):
                    probs = {k: round(0.04 + 0.12 * (((t + j) * 31) % 7) / 7, 3)
                             for j, k in enumerate(probabilities("rock"))}
                tags = [(tag, round(0.75 * 0.72 ** k * (0.85 + 0.3 * _jitter(t, k + 2)), 3))
                        for k, tag in enumerate(SCENE_TAGS[genre])]
                events.append(prediction(stream, float(t), genre, confidence=round(conf, 2), probs=probs,
                                         title=titles.get(stream), content=scene_content(genre, t),
                                         tags=sorted(tags, key=lambda kv: -kv[1])))
            prev = genre
    return events


def test_screenshot_realistic_scene(watched, server):
    events = scene_events()
    page = open_dashboard(watched, server)
    server.send(*events)
    wait_text(page, card_sel("radio1", ".axis-now"), "4:50")
    expect(page.locator("[data-stream]")).to_have_count(6)
    expect(card(page, "radio1").locator(".genre")).to_have_text("country")
    expect(card(page, "talk-am").locator(".genre")).to_have_text("speech")
    expect(card(page, "radio1").locator(".tags .tag")).to_have_count(5)
    assert card(page, "radio1").locator('.timeline .seg[data-genre="speech"]').count() > 0
    expect(card(page, "studio-b").locator(".state")).to_have_text("failed")
    for name in ("club-main", "jazz-fm", "radio1", "rooftop", "studio-b", "talk-am"):
        assert segments(page, name).count() > 0, name
    expect(card(page, "radio1").locator(".timeline .marker")).to_have_count(5)
    page.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000
    for name, path in CARD_SCREENSHOTS.items():
        card(page, name).screenshot(path=str(path))
        assert path.stat().st_size > 5_000, path
    watched.assert_clean()
