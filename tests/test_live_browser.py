"""``streamsplat-live`` in a real browser: headless Chromium shows the stream becoming Gaussians.

Same approach as tests/test_viewer_browser.py (SwiftShader WebGL, DevTools protocol over websockets): the
live command runs in-process on a synthetic real-time folder source (6 frames/s) with a tiny random model
whose Gaussians take the frames' colours (:func:`test_live.oracle_colours`); the page must show the image
the server sent, change as frames arrive, show frames/s in the panel, and its time slider must move
through the window when Play is pressed. The recording made meanwhile must open afterwards.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_live import oracle_colours, synthetic_frames, tiny_model  # noqa: E402

from test_viewer_browser import CHROME, canvas_box, corr, page_render, resize, start_chromium, stop_chromium  # noqa: E402

pytestmark = pytest.mark.skipif(
    CHROME is None, reason="no chromium binary installed (apt-get install -y chromium-headless-shell, as .ci/run does)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def js(page, expr: str):
    return page.send("Runtime.evaluate", {"expression": expr, "returnByValue": True})["result"].get("value")


def wait_for(cond, timeout: float, what: str, step: float = 0.1):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise TimeoutError(what)


def client_sent(viewer) -> int:
    return sum(c.renders for c in list(viewer._clients.values()))


@pytest.mark.timeout(240)
def test_live_in_chromium(tmp_path):
    from streamsplat_ns.cli.live import LiveArgs
    from streamsplat_ns.cli.live import main as live_main
    from streamsplat_ns.live.record import Recording

    folder, ddir = synthetic_frames(tmp_path / "clip", n=72)
    model = oracle_colours(tiny_model())
    proc, page = start_chromium(tmp_path / "chrome")  # first: the browser is the slow part
    sessions: list = []
    ready = threading.Event()
    result: dict = {}
    args = LiveArgs(
        source=str(folder),
        checkpoint=Path("unused"),
        depth="file",
        depth_dir=ddir,
        fps=6.0,
        window=6,
        port=free_port(),
        record=tmp_path / "rec",
        device="cpu",
        wait_for_viewer=True,
    )

    def run():
        try:
            result["res"] = live_main(args, model=model, ready=ready, session_out=sessions)
        except BaseException as e:  # noqa: BLE001
            result["error"] = e
            ready.set()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    try:
        assert ready.wait(60) and "error" not in result, result.get("error")
        session = sessions[0]
        viewer = session.viewer
        page.send("Page.enable")
        t_nav = time.time()
        page.send("Page.navigate", {"url": viewer.url})
        wait_for(lambda: client_sent(viewer) >= 2, 60, "no render reached the browser's client")
        t_first = time.time() - t_nav
        box = canvas_box(page)
        assert box[3] - box[1] > 200 and box[2] - box[0] > 200, f"no viewer canvas on the page: {box}"
        # viser draws the render over the part of the canvas the panel leaves free (the camera's aspect)
        aspect = float(list(viewer._clients.values())[0].client.camera.aspect)

        # frames keep arriving: the window slides and the page changes
        time.sleep(0.5)
        range_a, n = viewer.window.range(), client_sent(viewer)
        region_a = page_render(page.screenshot(), box, aspect)
        wait_for(
            lambda: viewer.window.range()[1] >= range_a[1] + 3 and client_sent(viewer) > n,
            40,
            "no new intervals / renders while the source streams",
        )
        time.sleep(0.5)
        region_b = page_render(page.screenshot(), box, aspect)
        diff = float(np.abs(region_b - region_a).mean())
        assert diff > 0.01, f"the page did not change as frames arrived (mean abs difference {diff:.4f})"
        print(
            f"page checks: first render {t_first:.1f} s after navigation; frames {range_a} -> "
            f"{viewer.window.range()}; page change {diff:.3f}"
        )

        # the panel shows frames/s (a positive rate) and the drop count
        text = wait_for(
            lambda: (lambda t: t if re.search(r"frames/s: [1-9]", t or "") else None)(
                js(page, "document.body.innerText")
            ),
            20,
            "the panel never showed a frames/s rate",
        )
        assert "latency:" in text and re.search(r"dropped \d+ frames", text), text

        # once the source has ended and the renders settle, the page shows exactly what was sent
        wait_for(lambda: viewer.window.closed, 60, "the source never ended")
        ct = list(viewer._clients.values())[0]
        wait_for(
            lambda: not ct.busy and ct.last_sent and time.perf_counter() - ct.last_sent > 1.5,
            60,
            "the client's renders never settled",
        )
        sent = ct.last_image.astype(np.float32) / 255
        shot = page.screenshot()
        region = page_render(shot, box, aspect)
        aspect = sent.shape[1] / sent.shape[0]
        region = page_render(shot, box, aspect)
        h = box[2] - box[0]
        w = int(round(h * aspect))
        expected = page_render(resize(sent, h, w), (0, 0, h, w), aspect)
        c = corr(region, expected)
        keep = os.environ.get("STREAMSPLAT_KEEP_SCREENSHOTS")
        if keep:
            from PIL import Image

            Path(keep).mkdir(parents=True, exist_ok=True)
            Image.fromarray((shot * 255).astype(np.uint8)).save(Path(keep) / "live_page.png")
            Image.fromarray(ct.last_image).save(Path(keep) / "live_sent.png")
        assert region.std() > 0.03, f"the page is (nearly) uniform: std {region.std():.3f}"
        assert c > 0.8, f"the page does not show the render the server sent (correlation {c:.2f})"

        # Play (clicked in the page) moves the time slider through the window
        clicked = js(
            page,
            "(() => { const b = Array.from(document.querySelectorAll('button'))"
            ".find(b => b.innerText.trim() === 'Play'); if (!b) return false; b.click(); "
            "return true; })()",
        )
        assert clicked, "no Play button in the panel"
        wait_for(lambda: viewer.playing, 10, "Play did not start playback")
        assert not viewer.follow.value, "Play must leave follow-live mode"
        seen = set()

        def slider_values():
            v = js(
                page,
                "JSON.stringify(Array.from(document.querySelectorAll('[role=slider]'))"
                ".map(s => s.getAttribute('aria-valuenow')))",
            )
            vals = [float(x) for x in json.loads(v or "[]") if x is not None]
            if vals:
                seen.add(vals[0])
            lo, hi = viewer.window.range()
            return len(seen) >= 3 and all(lo - 6 <= x <= hi for x in seen)

        wait_for(slider_values, 20, f"the page's time slider did not move through the window: {sorted(seen)}", 0.3)

        # the session ends as the source did, and the recording holds every interval
        session.stop_event.set()
        th.join(30)
        res = result["res"]
        assert res.ok and "the source ended" in res.message, res.message
        rec = Recording(tmp_path / "rec")
        assert len(rec.keys) == res.intervals >= 5 and rec.info["status"] == "complete"
    finally:
        stop_chromium(proc)
        if sessions:
            sessions[0].stop_event.set()
        th.join(30)
