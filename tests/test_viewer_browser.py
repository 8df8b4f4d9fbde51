"""The nerfstudio viewer in a real browser: headless Chromium shows our render, and time changes it.

The viewer runs in-process (as ``ns-viewer`` builds it) on 127.0.0.1 with a 3-step checkpoint; the
page is driven over the DevTools protocol (``websockets``, which viser already depends on). A 3-step
network renders near-uniform noise, so its ``predict_static`` is swapped for a pixel-aligned "oracle"
(Gaussians coloured by the input frame): every other part of the path (datamanager frames, clip cache,
camera mapping, rasteriser, nerfstudio's render thread, viser, WebGL in the page) is the real one.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest_ns import trained_config  # noqa: E402

CHROME = os.environ.get("STREAMSPLAT_CHROME") or next(
    (
        shutil.which(n)
        for n in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
        if shutil.which(n)
    ),
    None,
)
pytestmark = pytest.mark.skipif(
    CHROME is None, reason="no chromium binary installed (apt-get install -y chromium-headless-shell, as .ci/run does)"
)

WIN_W, WIN_H = 900, 560


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    return trained_config(tmp_path_factory)


class DevTools:
    """Minimal synchronous Chrome DevTools protocol client over one page's websocket."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=64 * 2**20, open_timeout=30)
        self.next_id = 0

    def send(self, method: str, params: dict | None = None, timeout: float = 60.0) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params or {}}))
        end = time.time() + timeout
        while time.time() < end:
            msg = json.loads(self.ws.recv(timeout=max(0.1, end - time.time())))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
        raise TimeoutError(method)

    def screenshot(self) -> np.ndarray:
        from PIL import Image

        data = base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.float32) / 255.0

    def close(self) -> None:
        self.ws.close()


def start_chromium(user_dir: Path):
    """Headless Chromium with SwiftShader WebGL and a DevTools port (read back from DevToolsActivePort)."""
    cmd = [
        CHROME,
        "--headless",
        "--no-sandbox",
        "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={user_dir}",
        f"--window-size={WIN_W},{WIN_H}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        "about:blank",
    ]
    # own process group: killing only the browser process would orphan its GPU/renderer children
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    port_file = user_dir / "DevToolsActivePort"
    end = time.time() + 30
    while not port_file.exists() or not port_file.read_text().strip():
        if proc.poll() is not None or time.time() > end:
            stop_chromium(proc)
            raise RuntimeError(f"{CHROME} did not start: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.1)
    try:
        port = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = next(t for t in targets if t["type"] == "page")
        return proc, DevTools(page["webSocketDebuggerUrl"])
    except BaseException:
        stop_chromium(proc)
        raise


def stop_chromium(proc: subprocess.Popen) -> None:
    """Kill the browser's whole process group (browser, zygote, GPU and renderer processes)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def oracle_predict_static(rgb: torch.Tensor, disp: torch.Tensor):
    """Pixel-aligned Gaussians coloured by the frame, at inverse depth = disparity (the network's ideal)."""
    from streamsplat_ns.gaussians import Gaussians

    B, _, H, W = rgb.shape
    z, x = torch.meshgrid(1 - (torch.arange(H) + 0.5) * 2 / H, (torch.arange(W) + 0.5) * 2 / W - 1, indexing="ij")
    y = disp[:, 0].clamp(0.02, 0.98)
    means = torch.stack([x.expand(B, H, W), y, z.expand(B, H, W)], -1).reshape(B, H * W, 3)
    quats = torch.zeros(B, H * W, 4)
    quats[..., 0] = 1
    scales = torch.tensor([1.0 / W, 0.002, 1.0 / H]).expand(B, H * W, 3).clone()
    return Gaussians(
        means=means,
        quats=quats,
        scales=scales,
        opacities=torch.full((B, H * W), 0.99),
        colours=rgb.permute(0, 2, 3, 1).reshape(B, H * W, 3),
    )


class RenderLog:
    """Records what nerfstudio's render threads send to the page (viser's set_background_image)."""

    def __init__(self, monkeypatch) -> None:
        from viser._scene_api import SceneApi

        self.images: list = []
        self.lock = threading.Lock()
        orig = SceneApi.set_background_image

        def record(api, image, *args, **kwargs):
            with self.lock:
                self.images.append((time.time(), np.asarray(image, np.float32) / 255.0))
            return orig(api, image, *args, **kwargs)

        monkeypatch.setattr(SceneApi, "set_background_image", record)

    def wait_settled(self, after: float, timeout: float, min_height: int = 300, quiet: float = 3.0) -> np.ndarray:
        """The render on the page once nerfstudio has settled: the last image sent after ``after`` is a
        full-resolution (static) one and nothing newer came for ``quiet`` seconds (page decode + draw)."""
        end = time.time() + timeout
        while time.time() < end:
            with self.lock:
                new = [(t, im) for t, im in self.images if t > after]
            if new and new[-1][1].shape[0] >= min_height and time.time() - new[-1][0] > quiet:
                return new[-1][1]
            time.sleep(0.2)
        raise TimeoutError(
            f"no settled full-resolution render within {timeout:.0f} s "
            f"({len(self.images)} renders, heights {[im.shape[0] for _, im in self.images][-8:]})"
        )


def resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
    return (
        torch.nn.functional.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0]
        .permute(1, 2, 0)
        .numpy()
    )


def corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1) - a.mean(), b.reshape(-1) - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))


def canvas_box(page: DevTools) -> tuple:
    """(top, left, bottom, right) in screenshot pixels of viser's WebGL canvas (the GUI panel sits beside it)."""
    expr = (
        "JSON.stringify(Array.from(document.querySelectorAll('canvas')).map(c => c.getBoundingClientRect())"
        ".sort((a, b) => b.width * b.height - a.width * a.height)[0])"
    )
    r = json.loads(page.send("Runtime.evaluate", {"expression": expr, "returnByValue": True})["result"]["value"])
    return int(round(r["top"])), int(round(r["left"])), int(round(r["bottom"])), int(round(r["right"]))


def page_render(shot: np.ndarray, box: tuple, aspect: float) -> np.ndarray:
    """The part of a screenshot where viser draws the render: the canvas' left part of the given aspect
    (the GUI panel covers the rest), minus margins (axes gizmo, frustum at the centre is kept)."""
    t, l, b, _ = box
    img = shot[t:b, l : l + int(round((b - t) * aspect))]
    h, w = img.shape[:2]
    return img[int(0.04 * h) : int(0.96 * h), int(0.1 * w) : int(0.97 * w)]


def expected_on_page(sent: np.ndarray, box: tuple) -> np.ndarray:
    """What the page should show there: the sent render stretched over that area."""
    t, _, b, _ = box
    aspect = sent.shape[1] / sent.shape[0]
    h = b - t
    w = int(round(h * aspect))
    return page_render(resize(sent, h, w), (0, 0, h, w), aspect)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_viewer_in_chromium_shows_scene_and_time(config_path, tmp_path, monkeypatch):
    from nerfstudio.cameras.cameras import Cameras, CameraType
    from nerfstudio.configs.base_config import ViewerConfig
    from nerfstudio.utils.eval_utils import eval_setup
    from nerfstudio.viewer.viewer import Viewer

    torch.manual_seed(0)
    t_start = time.time()
    config, pipeline, _, step = eval_setup(config_path, test_mode="test")
    model = pipeline.model
    model.net.predict_static = oracle_predict_static
    log = RenderLog(monkeypatch)
    viewer = Viewer(
        ViewerConfig(websocket_host="127.0.0.1", max_num_display_images=8),
        log_filename=tmp_path / "v.txt",
        datapath=pipeline.datamanager.get_datapath(),
        pipeline=pipeline,
        train_lock=threading.Lock(),
    )
    proc = None
    try:
        viewer.init_scene(
            train_dataset=pipeline.datamanager.train_dataset,
            train_state="completed",
            eval_dataset=pipeline.datamanager.eval_dataset,
        )
        viewer.update_scene(step=step)
        assert viewer.include_time, "the datamanager must report includes_time so the Time slider shows"
        port = viewer.viser_server.get_port()
        print(f"viewer up after {time.time() - t_start:.1f} s")
        proc, page = start_chromium(tmp_path / "chrome")
        page.send("Page.enable")
        t_nav = time.time()
        page.send("Page.navigate", {"url": f"http://127.0.0.1:{port}/"})

        sent0 = log.wait_settled(t_nav, timeout=120)
        print(f"settled t0 after {time.time() - t_nav:.1f} s, {len(log.images)} renders")
        shot0 = page.screenshot()
        from PIL import Image

        Image.fromarray((shot0 * 255).astype(np.uint8)).save(tmp_path / "viewer_t0.png")
        keep = os.environ.get("STREAMSPLAT_KEEP_SCREENSHOTS")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp_path / "viewer_t0.png", Path(keep) / "viewer_t0.png")
        box = canvas_box(page)
        assert box[3] - box[1] > 200 and box[2] - box[0] > 200, f"no viewer canvas on the page: {box}"

        # the page shows the render: not blank, and it is the image the server sent
        region0 = page_render(shot0, box, sent0.shape[1] / sent0.shape[0])
        assert region0.std() > 0.05, f"screenshot is (nearly) uniform: std {region0.std():.3f}"
        c0 = corr(region0, expected_on_page(sent0, box))
        assert c0 > 0.8, f"the page does not show the sent render (correlation {c0:.2f})"

        # the initial camera is the canonical view: the sent render equals an ORTHOPHOTO canonical render
        h, w = sent0.shape[:2]
        from streamsplat_ns.rendering.camera import canonical_c2w_opengl

        hm, wm = model.image_size
        cam = Cameras(
            camera_to_worlds=canonical_c2w_opengl()[None],
            fx=h / 2 * wm / hm,
            fy=h / 2,
            cx=w / 2,
            cy=h / 2,
            width=w,
            height=h,
            camera_type=CameraType.ORTHOPHOTO,
            times=torch.zeros(1, 1),
        )
        ref = model.get_outputs_for_camera(cam)["rgb"].numpy()
        c_ref = corr(sent0, ref)
        assert c_ref > 0.9, f"the viewer's initial view is not the canonical one (correlation {c_ref:.2f})"

        # move the Time slider (as a user would); the page must change in the scene region
        t_set = time.time()
        viewer.control_panel.time = 1.0
        viewer._trigger_rerender()
        sent1 = log.wait_settled(t_set, timeout=90)
        print(f"settled t1 after {time.time() - t_set:.1f} s, {len(log.images)} renders")
        shot1 = page.screenshot()
        Image.fromarray((shot1 * 255).astype(np.uint8)).save(tmp_path / "viewer_t1.png")
        if keep:
            shutil.copy(tmp_path / "viewer_t1.png", Path(keep) / "viewer_t1.png")
        region1 = page_render(shot1, box, sent1.shape[1] / sent1.shape[0])
        c1 = corr(region1, expected_on_page(sent1, box))
        assert c1 > 0.8, f"after the time change the page does not show the new render (correlation {c1:.2f})"
        diff = float(np.abs(region1 - region0).mean())
        assert diff > 0.01, f"the screenshot did not change with time (mean abs difference {diff:.4f})"
        page.close()
    finally:
        if proc is not None:
            stop_chromium(proc)
        viewer.viser_server.stop()


def test_viewer_clip_selector_changes_render(config_path):
    """The "Clip" GUI slider picks the video; "depth" / "accumulation" are what Composite depth needs."""
    from nerfstudio.utils.eval_utils import eval_setup
    from nerfstudio.viewer.utils import CameraState, get_camera

    _, pipeline, _, _ = eval_setup(config_path, test_mode="test")
    model = pipeline.model
    model.net.predict_static = oracle_predict_static
    assert model.viewer_clip.max >= 1 and len(model.clip_names) >= 2
    from streamsplat_ns.rendering.camera import canonical_viewer_c2w

    c2w = canonical_viewer_c2w(75.0)
    from nerfstudio.cameras.cameras import CameraType

    cam = get_camera(
        CameraState(fov=np.radians(75.0), aspect=1.75, c2w=c2w, camera_type=CameraType.PERSPECTIVE, time=0.0), 96, 168
    )
    cam.times = torch.zeros(1, 1)
    out0 = model.get_outputs_for_camera(cam)
    model.viewer_clip.value = 1
    out1 = model.get_outputs_for_camera(cam)
    assert float((out0["rgb"] - out1["rgb"]).abs().mean()) > 0.02
    for out in (out0, out1):
        assert out["depth"].shape == (96, 168, 1) and out["accumulation"].shape == (96, 168, 1)
        assert torch.isfinite(out["depth"]).all() and (out["depth"] > 0).all()
    # composite depth: nerfstudio's z-buffer conversion of our ray-distance depth gives positive z
    rays = cam.generate_rays(camera_indices=0)
    pts = (cam.camera_to_worlds[0, :3, :3].T @ (rays.directions * out0["depth"]).reshape(-1, 3).T).T
    assert (-pts[:, 2] > 0).all()
