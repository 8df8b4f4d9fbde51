"""A viser viewer for a window of intervals: live sessions, recordings and reconstruction folders.

It looks like nerfstudio's viewer (same viser version, theme and camera conventions: the scene is scaled
by 10 in viser, every client starts at the canonical view and orbits about the canonical volume's pivot)
but needs no training config: it renders :class:`IntervalWindow` contents directly.

Each connected browser gets one render thread that draws the *newest* state whenever something changed
(camera, time, a new interval, zoom) and then looks again: requests coalesce, so a slow client sees
fewer, newer images and nothing queues up. The engine only appends to the window and never waits here.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch

from .state import IntervalWindow, LiveInterval, LiveStats, now

log = logging.getLogger(__name__)

VISER_SCALE = 10.0
"""nerfstudio's VISER_NERFSTUDIO_SCALE_RATIO: world units x 10 in viser (orbit speed and grid as ns-viewer)."""


@dataclass
class ViewerOptions:
    host: str = "127.0.0.1"
    """bind address (0.0.0.0 puts the viewer on the network)"""
    port: int = 7007
    """first port tried (the next free one is used if taken)"""
    max_resolution: Optional[int] = None
    """long side of the rendered image in pixels (default: 720 on CUDA, 2 x the model size, at most 256, on CPU)"""
    jpeg_quality: int = 80
    background: float = 0.5
    backend: str = "auto"
    export_dir: Path = Path("exports")
    """where the "Export PLY" button writes"""
    export_name: str = "live"
    """PLY name prefix: <name>_frame<source frame>.ply (the project's PLY convention)"""
    title: str = "StreamSplat live"


def viser_camera_c2w(wxyz, position) -> torch.Tensor:
    """viser camera (wxyz, position in viser units) -> OpenGL camera-to-world [3, 4] in world units."""
    import viser.transforms as vtf

    R = vtf.SO3(wxyz=np.asarray(wxyz, np.float64)) @ vtf.SO3.from_x_radians(np.pi)
    pos = np.asarray(position, np.float64) / VISER_SCALE
    return torch.from_numpy(np.concatenate([R.as_matrix(), pos[:, None]], 1)).float()


@dataclass
class CameraView:
    """What a render needs of a client's camera."""

    c2w: torch.Tensor  # OpenGL [3, 4], world units
    fov: float  # vertical, radians
    aspect: float


def canonical_view(fov_deg: float = 50.0, aspect: float = 16 / 9) -> CameraView:
    from ..rendering.camera import canonical_viewer_c2w

    return CameraView(canonical_viewer_c2w(fov_deg), math.radians(fov_deg), aspect)


class IntervalRenderer:
    """Renders one interval at a local time from a viewer camera (orthographic view of the canonical scene)."""

    def __init__(
        self,
        model_size: Tuple[int, int],
        device: torch.device,
        *,
        background: float = 0.5,
        backend: str = "auto",
        max_resolution: Optional[int] = None,
    ) -> None:
        self.model_size = model_size
        self.device = device
        self.background = background
        self.backend = backend
        if max_resolution is None:
            max_resolution = 720 if device.type == "cuda" else min(256, 2 * max(model_size))
        self.max_resolution = int(max_resolution)

    def size(self, aspect: float) -> Tuple[int, int]:
        m = self.max_resolution
        if aspect >= 1:
            return max(1, round(m / aspect)), m
        return m, max(1, round(m * aspect))

    @torch.no_grad()
    def render(self, item: LiveInterval, local_t: float, view: CameraView, zoom: float = 1.0) -> np.ndarray:
        """uint8 [H, W, 3]."""
        from ..rendering import render_dynamic
        from ..rendering.camera import perspective_to_ortho

        if item.ready is not None:  # made on the engine's stream: wait for it on ours
            torch.cuda.current_stream(self.device).wait_event(item.ready)
        H, W = self.size(view.aspect)
        fy = H / 2.0 / math.tan(view.fov / 2.0)
        viewmat, K, _ = perspective_to_ortho(
            view.c2w.to(self.device),
            fy,
            fy,
            W / 2.0,
            H / 2.0,
            orthographic=False,
            model_size=self.model_size,
            zoom=zoom,
        )
        g = item.gaussians
        if g.means.device != self.device:
            g = g.to(self.device)
        g = g.map(lambda x: x.float())
        bg = torch.full((1, 3), self.background, device=self.device)
        out = render_dynamic(
            g,
            torch.tensor([[local_t]], device=self.device),
            H,
            W,
            backgrounds=bg,
            viewmats=viewmat[None],
            Ks=K[None],
            backend=self.backend,
        )
        rgb = out.rgb.reshape(H, W, 3)
        return (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


class _ClientThread:
    """One client's render loop: wake on any change, draw the newest state, repeat."""

    def __init__(self, viewer: "LiveViewer", client=None) -> None:
        self.viewer, self.client = viewer, client
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.renders = 0
        self.last_image: Optional[np.ndarray] = None
        self.last_sent = 0.0
        self.busy = False
        self._last_key = None
        self.thread = threading.Thread(
            target=self._run, daemon=True, name=f"streamsplat-view-{client.client_id if client else 'headless'}"
        )
        self.thread.start()
        self.wake.set()

    def _view(self) -> CameraView:
        if self.client is None:
            return self.viewer.headless_view
        cam = self.client.camera
        return CameraView(viser_camera_c2w(cam.wxyz, cam.position), float(cam.fov), float(cam.aspect))

    def _run(self) -> None:
        v = self.viewer
        while not self.stop.is_set():
            self.wake.wait(0.25)
            self.wake.clear()
            if self.stop.is_set():
                return
            try:
                item, local = v.current()
                if item is None:
                    continue
                view = self._view()
                zoom = float(v.zoom)
                key = (
                    id(item.gaussians),
                    round(local, 4),
                    tuple(view.c2w.reshape(-1).tolist()),
                    round(view.fov, 5),
                    round(view.aspect, 4),
                    zoom,
                )
                if key == self._last_key:
                    continue
                self.busy = True
                img = v.renderer.render(item, local, view, zoom)
                t_render = now()
                api = self.client.scene if self.client is not None else v.server.scene
                api.set_background_image(img, format="jpeg", jpeg_quality=v.opts.jpeg_quality)
                t_sent = now()
                self._last_key = key
                self.renders += 1
                self.last_image, self.last_sent, self.busy = img, t_sent, False
                v._sent(item, t_render, t_sent, img)
            except Exception as e:  # noqa: BLE001 - a failed render must not kill the viewer
                self.busy = False
                if not self.stop.is_set():
                    log.exception("render failed: %s", e)
                    v.set_message(f"render failed: {e}")
                    self.stop.wait(1.0)


class LiveViewer:
    """The viser server, its panel and one render thread per client.

    ``window`` is read only. Times are source frame indices; ``fps`` is the source rate (the play speed).
    ``follow_live``: the time follows the newest interval (the panel's "Follow live" box; a user moving
    the slider or pressing Play turns it off). ``headless=True`` also renders the canonical view for
    nobody (broadcast to all clients; used by the latency benchmark, which has no browser).
    """

    def __init__(
        self,
        window: IntervalWindow,
        *,
        model_size: Tuple[int, int],
        device: torch.device,
        stats: Optional[LiveStats] = None,
        opts: Optional[ViewerOptions] = None,
        fps: float = 30.0,
        follow_live: bool = True,
        headless: bool = False,
        source_label: str = "",
        on_export: Optional[Callable[[Path], None]] = None,
    ) -> None:
        import viser

        self.window = window
        self.opts = opts or ViewerOptions()
        self.stats = stats or LiveStats()
        self.fps = max(float(fps or 30.0), 1e-3)
        self.renderer = IntervalRenderer(
            model_size,
            device,
            background=self.opts.background,
            backend=self.opts.backend,
            max_resolution=self.opts.max_resolution,
        )
        self.headless_view = canonical_view(50.0, model_size[1] / model_size[0])
        self._lock = threading.Lock()
        self._time = 0.0
        self._range: Optional[Tuple[float, float]] = None
        self._last_reported_k = -1
        self._message = ""
        self.last_image: Optional[np.ndarray] = None
        self.images_sent = 0
        self.source_label = source_label
        self._on_export = on_export
        self.server = viser.ViserServer(host=self.opts.host, port=self.opts.port, verbose=False)
        self.server.gui.configure_theme(control_layout="collapsible", dark_mode=True, brand_color=(255, 211, 105))
        gui = self.server.gui
        self.title_md = gui.add_markdown(f"**{self.opts.title}**" + (f"  \n{source_label}" if source_label else ""))
        self.stats_md = gui.add_markdown("frames/s: –  \nlatency: –  \ndropped 0 frames")
        self.time_slider = gui.add_slider(
            "Time (frame)",
            min=0.0,
            max=1.0,
            step=0.05,
            initial_value=0.0,
            hint="source frame shown (fractional: between frames), inside the window of recent intervals",
        )
        self.follow = gui.add_checkbox("Follow live", follow_live, hint="show the newest interval as it arrives")
        self.play_btn = gui.add_button("Play", hint="play the window in a loop")
        self.pause_btn = gui.add_button("Pause", visible=False)
        self.zoom_num = gui.add_number(
            "Ortho zoom",
            1.0,
            min=0.05,
            max=50.0,
            step=0.05,
            hint="extra zoom on top of the viewer camera's (1 = canonical framing)",
        )
        self.reset_btn = gui.add_button("Reset view", hint="back to the canonical (input) view")
        self.export_btn = gui.add_button(
            "Export PLY", hint=f"write the Gaussians at the current time to {self.opts.export_dir}/"
        )
        self.message_md = gui.add_markdown("")
        self.playing = False
        self.zoom = 1.0
        self._clients: Dict[int, _ClientThread] = {}

        @self.time_slider.on_update
        def _(event) -> None:
            if event.client is not None:  # a user dragged it: stop following the newest interval
                self.follow.value = False
                with self._lock:
                    self._time = float(self.time_slider.value)
                self.wake_all()

        @self.follow.on_update
        def _(event) -> None:
            if self.follow.value:
                self._set_playing(False)
            self.wake_all()

        @self.play_btn.on_click
        def _(event) -> None:
            self.follow.value = False
            self._set_playing(True)

        @self.pause_btn.on_click
        def _(event) -> None:
            self._set_playing(False)

        @self.zoom_num.on_update
        def _(event) -> None:
            self.zoom = max(float(self.zoom_num.value), 1e-3)
            self.wake_all()

        @self.reset_btn.on_click
        def _(event) -> None:
            clients = [event.client] if event.client is not None else list(self.server.get_clients().values())
            for c in clients:
                self.reset_camera(c)

        @self.export_btn.on_click
        def _(event) -> None:
            try:
                p = self.export_ply()
                self.set_message(f"wrote {p}")
            except Exception as e:  # noqa: BLE001 - shown in the panel
                self.set_message(f"export failed: {e}")

        self.server.on_client_connect(self._connect)
        self.server.on_client_disconnect(self._disconnect)
        self._stop = threading.Event()
        self._headless = _ClientThread(self) if headless else None
        self._control = threading.Thread(target=self._control_loop, name="streamsplat-view-control", daemon=True)
        self._control.start()

    # ------------------------------------------------------------------ public
    @property
    def port(self) -> int:
        return self.server.get_port()

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.opts.host in ("0.0.0.0", "") else self.opts.host
        return f"http://{host}:{self.port}/"

    @property
    def time(self) -> float:
        with self._lock:
            return self._time

    def set_time(self, t: float) -> None:
        """Move the slider (as the server: does not turn "Follow live" off)."""
        r = self.window.range()
        if r is not None:
            t = min(max(t, r[0]), r[1])
        with self._lock:
            self._time = t
        self.time_slider.value = float(t)
        self.wake_all()

    def current(self) -> Tuple[Optional[LiveInterval], float]:
        items = self.window.snapshot()
        return IntervalWindow.pick(items, self.time)

    def set_message(self, msg: str) -> None:
        self._message = msg
        self.message_md.content = msg

    def reset_camera(self, client) -> None:
        from ..rendering.camera import viewer_look_at

        position, look_at, up = viewer_look_at(math.degrees(float(client.camera.fov)), VISER_SCALE)
        with client.atomic():
            client.camera.position, client.camera.look_at, client.camera.up_direction = position, look_at, up

    def export_ply(self, folder: Optional[Path] = None) -> Path:
        """The Gaussians at the slider's time as a standard 3DGS .ply (the project's one PLY convention)."""
        from ..export import export_ply, ply_name

        item, local = self.current()
        if item is None:
            raise RuntimeError("nothing to export yet (no interval received)")
        i0, i1 = item.frames
        path = Path(folder or self.opts.export_dir) / ply_name(self.opts.export_name, i0 + local * (i1 - i0))
        export_ply(path, item.gaussians, time=local)
        if self._on_export is not None:
            self._on_export(path)
        return path

    def wake_all(self) -> None:
        for c in list(self._clients.values()):
            c.wake.set()
        if self._headless is not None:
            self._headless.wake.set()

    def close(self) -> None:
        self._stop.set()
        for c in list(self._clients.values()) + ([self._headless] if self._headless else []):
            c.stop.set()
            c.wake.set()
        for c in list(self._clients.values()) + ([self._headless] if self._headless else []):
            c.thread.join(timeout=10)
        self._control.join(timeout=5)
        self.server.stop()

    # ------------------------------------------------------------------ internals
    def _connect(self, client) -> None:
        self.reset_camera(client)
        ct = _ClientThread(self, client)
        self._clients[client.client_id] = ct

        @client.camera.on_update
        def _(_cam) -> None:
            ct.wake.set()

    def _disconnect(self, client) -> None:
        ct = self._clients.pop(client.client_id, None)
        if ct is not None:
            ct.stop.set()
            ct.wake.set()

    def _set_playing(self, playing: bool) -> None:
        self.playing = playing
        self.play_btn.visible = not playing
        self.pause_btn.visible = playing

    def _sent(self, item: LiveInterval, t_render: float, t_sent: float, img: np.ndarray) -> None:
        with self._lock:
            first = item.k > self._last_reported_k
            if first:
                self._last_reported_k = item.k
            self.last_image = img
            self.images_sent += 1
        if first:
            self.stats.viewer_updated(item, t_sent, t_render)

    def _set_range(self, lo: float, hi: float) -> None:
        from viser._messages import GuiUpdateMessage

        if self._range == (lo, hi):
            return
        self._range = (lo, hi)
        impl = self.time_slider._impl
        impl.gui_api._websock_interface.queue_message(GuiUpdateMessage(impl.id, {"min": lo, "max": hi}))

    def _control_loop(self) -> None:
        version, last_tick, last_stats = -1, now(), 0.0
        while not self._stop.is_set():
            version_new = self.window.wait_change(version, 1.0 / 30)
            t = now()
            r = self.window.range()
            if r is not None:
                self._set_range(*r)
                with self._lock:
                    cur = self._time
                if self.follow.value:
                    target = r[1]
                elif self.playing:
                    target = cur + (t - last_tick) * self.fps
                    if target > r[1] + 1e-6:
                        target = r[0]
                else:
                    target = min(max(cur, r[0]), r[1])
                if target != cur or version_new != version:
                    with self._lock:
                        self._time = target
                    if abs(float(self.time_slider.value) - target) > 1e-9:
                        self.time_slider.value = float(target)
                    self.wake_all()
            version, last_tick = version_new, t
            if t - last_stats > 0.5:
                last_stats = t
                extra = f"window: frames {r[0]:.0f}–{r[1]:.0f}" if r is not None else "waiting for frames…"
                if self.window.closed and self.window.message:
                    extra += f"  \n{self.window.message}"
                self.stats_md.content = self.stats.markdown(extra)
