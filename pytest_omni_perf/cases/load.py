"""Load against a vLLM-Omni-compatible HTTP server: N requests at a max concurrency or rate.

Concurrency is real only on the client side: engine objects run one request at a time and
are not shared between threads, so the load goes through HTTP, one ``httpx.Client`` per
worker thread (a thread pool of ``concurrency`` workers bounds the requests in flight). A
server queues what it cannot run at once, as vLLM-Omni's does; latencies include that wait,
as its benchmark client measures them.

Images go to ``POST /v1/images/generations`` (JSON; with input images ``/v1/images/edits``),
videos to ``POST /v1/videos/sync`` (multipart, an input image as its ``input_reference`` file;
both vLLM-Omni and the shipped server answer the mp4 with ``X-Peak-Memory-MB``).
Units: seconds, requests per second, MB (2**20 bytes).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from pytest_omni_perf.engines.base import GenerationRequest
from pytest_omni_perf.measure.interference import InterferenceMonitor, InterferenceReport
from pytest_omni_perf.measure.load_stats import LoadSample
from pytest_omni_perf.request_inputs import InputImage
from pytest_omni_perf.omni_wire import (
    DEFAULT_FPS, EDITS_PATH, IMAGES_PATH, VIDEOS_SYNC_PATH, edit_parts, error_message,
    image_payload, multipart, video_parts,
)

if TYPE_CHECKING:
    import httpx

    from pytest_omni_perf.engines.engine_pool import LiveEngine
    from pytest_omni_perf.hardware import HardwareInfo

HOST_WINDOW_S = 1.0
"""Length of the windows the host's conditions are recorded in during a load's measured
phase (``InterferenceMonitor`` rounds): requests overlap, so windows of time stand for rounds.
A second is ten times ``interference.CPU_MIN_ROUND_S``, so CPU shares are never mostly the
kernel's 10 ms ticks, and short enough that a load of a few seconds still gets several."""

_WORDS = ("fox", "river", "city", "lantern", "mountain", "robot", "garden", "ocean", "violin",
          "desert", "castle", "forest", "neon", "storm", "portrait", "market", "glacier")


@dataclasses.dataclass(frozen=True)
class LoadPlan:
    """What to send: measured requests, unmeasured warmup requests, and how fast."""

    requests: Sequence[GenerationRequest]
    concurrency: int
    """Most requests in flight at once (>= 1)."""
    request_rate: float | None = None
    """Requests per second with Poisson arrivals (seeded); None sends as fast as allowed."""
    warmup: Sequence[GenerationRequest] = ()
    warmup_concurrency: int = 1
    fps: int = DEFAULT_FPS
    """Frames per second asked of video requests that set none of their own."""
    seed: int = 0
    """Seeds the arrival times."""
    timeout_s: float = 600.0
    """Most seconds one request may take."""

    def again(self) -> LoadPlan:
        """The same measured requests without the warmup: a second run on a warm server."""
        return dataclasses.replace(self, warmup=())


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    """One measured request."""

    ok: bool
    latency_s: float
    """Client-side end-to-end seconds, queueing on the server included."""
    peak_memory_mb: float | None = None
    error: str = ""
    stage_durations: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """What the server reported per stage, as it names them (``stage_0_gen_ms``, ...; ms)."""
    finished_s: float = 0.0
    """When its answer arrived: seconds since the first request of its phase was sent."""


@dataclasses.dataclass(frozen=True)
class LoadResult:
    """The measured phase of a load at one concurrency level."""

    concurrency: int
    completed: int
    failed: int
    duration_s: float
    """First request sent to last answer received (s)."""
    records: tuple[RequestRecord, ...]
    interference: InterferenceReport | None = None
    """The host's conditions in ``HOST_WINDOW_S`` windows of the measured phase; None when
    they were not recorded (a server whose processes are not the plugin's)."""

    @property
    def host(self) -> str:
        """The host's conditions in plain words (``InterferenceReport.summary``), "" when
        they were not recorded."""
        return self.interference.summary() if self.interference is not None else ""

    @property
    def busy(self) -> str | None:
        """Why the host was contended in most windows (``measure.contention.contended``), or
        None: quiet, or not recorded."""
        from pytest_omni_perf.measure.contention import contended

        return contended(self.interference) if self.interference is not None else None

    def sample(self) -> LoadSample:
        """The completed requests' latencies and inter-completion gaps, for intervals."""
        done = [r for r in self.records if r.ok]
        return LoadSample.from_completions([r.latency_s for r in done],
                                           [r.finished_s for r in done])

    def then(self, other: LoadResult) -> LoadResult:
        """This run and ``other`` (the same level run again) as one: counts and durations
        add, ``other``'s answers are timed from this one's last, the pause left out."""
        later = tuple(dataclasses.replace(r, finished_s=r.finished_s + self.duration_s)
                      for r in other.records)
        return LoadResult(concurrency=self.concurrency,
                          completed=self.completed + other.completed,
                          failed=self.failed + other.failed,
                          duration_s=self.duration_s + other.duration_s,
                          records=self.records + later,
                          interference=None if self.interference is None
                          or other.interference is None else InterferenceReport(
                              self.interference.rounds + other.interference.rounds))

    def metrics(self) -> dict[str, float | None]:
        """Throughput (req/s), latency statistics of completed requests (s), peak memory
        (MB; None when the server reported none) under the names case baselines use."""
        import numpy as np

        latencies = np.array([r.latency_s for r in self.records if r.ok], dtype=float)
        peaks = np.array([r.peak_memory_mb for r in self.records
                          if r.ok and r.peak_memory_mb], dtype=float)
        found: dict[str, float | None] = {
            "throughput_qps": self.completed / self.duration_s if self.duration_s > 0 else None,
            "completed": float(self.completed), "failed": float(self.failed)}
        if latencies.size:
            p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
            found.update(latency_mean=float(np.mean(latencies)),
                         latency_median=float(np.median(latencies)),
                         latency_p50=float(p50), latency_p95=float(p95), latency_p99=float(p99))
        else:
            found.update(dict.fromkeys(("latency_mean", "latency_median", "latency_p50",
                                        "latency_p95", "latency_p99")))
        found["peak_memory_mb_max"] = float(peaks.max()) if peaks.size else None
        found["peak_memory_mb_mean"] = float(peaks.mean()) if peaks.size else None
        return found

    def stage_means(self) -> dict[str, float]:
        """Mean of each engine-reported stage duration over completed requests (ms), keyed
        as the server names the stages; empty when the server reported none."""
        totals: dict[str, list[float]] = {}
        for record in self.records:
            if record.ok:
                for name, value in record.stage_durations.items():
                    totals.setdefault(name, []).append(value)
        return {name: sum(values) / len(values) for name, values in totals.items()}

    def first_error(self) -> str:
        return next((r.error for r in self.records if not r.ok), "")


def random_prompts(count: int, seed: int) -> list[str]:
    """``count`` prompts drawn from a fixed word list with numpy's PCG64 (the same on every
    machine), standing in for the benchmark's ``random`` dataset."""
    import numpy as np

    rng = np.random.Generator(np.random.PCG64(seed))
    return [" ".join(str(w) for w in rng.choice(_WORDS, size=6)) for _ in range(count)]


@functools.lru_cache(maxsize=1)  # one picture for every request: encoded once
def random_input_image() -> InputImage:
    """The input image of the benchmark's ``random`` dataset for image tasks (i2v, ti2v,
    i2i ...): a 512x512 white RGB picture, as vLLM-Omni's
    ``benchmarks/diffusion/diffusion_benchmark_serving.py`` (``RandomDataset.
    _generate_random_image_paths``) writes it; the pipeline resizes it to the request's size."""
    import numpy as np

    from pytest_omni_perf.request_inputs import input_image

    return input_image(np.full((512, 512, 3), 255, dtype=np.uint8), "image")


def run_load(url: str, plan: LoadPlan,
             monitor: InterferenceMonitor | None = None) -> LoadResult:
    """Send the warmup (unmeasured), then the measured requests; never raises for a failed
    request (it is counted and its error kept). With ``monitor`` (built for the server's
    processes) the host's conditions during the measured phase are recorded too."""
    if plan.warmup:
        _send_all(url, plan, plan.warmup, plan.warmup_concurrency, None)
    windows = _HostWindows(monitor) if monitor is not None else None
    try:
        records = _send_all(url, plan, plan.requests, plan.concurrency, plan.request_rate)
    finally:
        report = windows.stop() if windows is not None else None
    completed = sum(r.ok for r in records)
    return LoadResult(concurrency=plan.concurrency, completed=completed,
                      failed=len(records) - completed,
                      duration_s=max((r.finished_s for r in records), default=0.0),
                      records=tuple(records), interference=report)


def host_monitor(server: LiveEngine, hardware: HardwareInfo) -> InterferenceMonitor | None:
    """A fresh monitor of the host around the pool's ``server``, on the GPUs its spec names
    (all of ``hardware``'s when it names none; none on CPU); None for a server whose processes
    are not known (an attached one): its own CPU time would count as other load."""
    from pytest_omni_perf.measure.interference import monitor_for

    pids = server.pids()
    devices = list(server.key[3]) or [g.index for g in hardware.gpus]
    return monitor_for(pids, devices) if pids else None


class _HostWindows:
    """Records ``monitor`` rounds back to back, one per ``HOST_WINDOW_S``, in a thread of its
    own until ``stop`` (the monitor is touched by this thread only, never by the senders)."""

    def __init__(self, monitor: InterferenceMonitor) -> None:
        self._monitor = monitor
        self._done = threading.Event()
        monitor.start()
        monitor.begin_round()
        self._thread = threading.Thread(target=self._tick, name="omni-load-host", daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        while not self._done.wait(HOST_WINDOW_S):
            self._monitor.end_round()
            self._monitor.begin_round()
        self._monitor.end_round()

    def stop(self) -> InterferenceReport:
        self._done.set()
        self._thread.join()
        return self._monitor.stop()


def _arrivals(count: int, rate: float | None, seed: int) -> list[float]:
    """Send offsets in seconds: all 0 without a rate, else a seeded Poisson process."""
    if rate is None:
        return [0.0] * count
    import numpy as np

    gaps = np.random.Generator(np.random.PCG64(seed)).exponential(1.0 / rate, size=count)
    return [float(t) for t in np.cumsum(gaps) - gaps[0]]


def _send_all(url: str, plan: LoadPlan, requests: Sequence[GenerationRequest],
              concurrency: int, rate: float | None) -> list[RequestRecord]:
    local = threading.local()
    clients: list[httpx.Client] = []
    lock = threading.Lock()

    def client() -> httpx.Client:
        import httpx

        if getattr(local, "client", None) is None:
            local.client = httpx.Client(trust_env=False)
            with lock:
                clients.append(local.client)
        return local.client  # type: ignore[no-any-return]

    start = time.perf_counter()

    def send(request: GenerationRequest) -> RequestRecord:
        record = _send(client(), url, request, plan)
        return dataclasses.replace(record, finished_s=time.perf_counter() - start)

    try:
        with ThreadPoolExecutor(max_workers=concurrency,
                                thread_name_prefix="omni-load") as pool:
            futures = []
            for request, offset in zip(requests, _arrivals(len(requests), rate, plan.seed)):
                if (wait := start + offset - time.perf_counter()) > 0:
                    time.sleep(wait)
                futures.append(pool.submit(send, request))
            return [f.result() for f in futures]
    finally:
        for c in clients:
            c.close()


def _send(client: httpx.Client, url: str, request: GenerationRequest,
          plan: LoadPlan) -> RequestRecord:
    import httpx

    began = time.perf_counter()
    try:
        if request.is_video or request.has_inputs:
            path = VIDEOS_SYNC_PATH if request.is_video else EDITS_PATH
            body, content_type = multipart(*(video_parts(request, plan.fps) if request.is_video
                                             else edit_parts(request)))
            response = client.post(url + path, content=body,
                                   headers={"Content-Type": content_type},
                                   timeout=plan.timeout_s)
        else:
            response = client.post(url + IMAGES_PATH, timeout=plan.timeout_s,
                                    content=json.dumps(image_payload(request)).encode(),
                                    headers={"Content-Type": "application/json"})
    except (httpx.HTTPError, ValueError) as exc:  # ValueError: an input the body cannot carry
        return RequestRecord(False, time.perf_counter() - began,
                             error=f"{type(exc).__name__}: {exc}")
    latency = time.perf_counter() - began
    if response.status_code != 200:
        return RequestRecord(False, latency, error=f"HTTP {response.status_code}: "
                             f"{error_message(response.content)}")
    return RequestRecord(True, latency, peak_memory_mb=_peak_mb(response, request.is_video),
                         stage_durations=_stages(response, request.is_video))


def _stages(response: httpx.Response, video: bool) -> dict[str, float]:
    """Engine-reported stage durations: vLLM-Omni 0.30 answers images with
    ``metrics.stage_durations`` (api_server.py, _build_image_response_metrics) and
    ``/v1/videos/sync`` with the JSON header ``X-Stage-Durations``; finite numbers only."""
    try:
        if video:
            raw: Any = json.loads(response.headers.get("X-Stage-Durations") or "{}")
        else:
            raw = (response.json().get("metrics") or {}).get("stage_durations") or {}
    except (ValueError, AttributeError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {str(k): float(v) for k, v in raw.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
            and abs(v) != float("inf")}


def _peak_mb(response: httpx.Response, video: bool) -> float | None:
    """The server's reported peak memory in MB, None when absent or zero."""
    try:
        if video:
            value: Any = response.headers.get("X-Peak-Memory-MB")
        else:
            value = (response.json().get("metrics") or {}).get("peak_memory_mb")
        peak = float(value)
    except (TypeError, ValueError, AttributeError):
        return None
    return peak if peak > 0 and peak == peak and peak != float("inf") else None
