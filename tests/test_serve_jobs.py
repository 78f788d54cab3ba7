"""Video jobs whose generation fails, over real HTTP: the shipped app on a loopback socket
with a runner that raises (a valid request that fails inside the engine cannot be made on
demand with a real model now that the request models refuse what the pipeline would)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import httpx  # noqa: E402
import uvicorn  # noqa: E402

from pytest_omni_perf.engines.base import GenerationOutput, GenerationRequest  # noqa: E402
from pytest_omni_perf.omni_wire import multipart  # noqa: E402
from pytest_omni_perf.serve.app import build_app  # noqa: E402
from pytest_omni_perf.serve.cli import bind  # noqa: E402
from pytest_omni_perf.serve.protocol import PipelineRules  # noqa: E402
from pytest_omni_perf.serve.state import ServerState  # noqa: E402


class FailingRunner:
    """Stands in for DiffusersRunner: every generation fails as torch would."""

    def generate(self, request: GenerationRequest) -> GenerationOutput:
        raise ValueError(f"cannot render {request.width}x{request.height}")


@pytest.fixture
def failing() -> Iterator[httpx.Client]:
    state = ServerState("stub-video")
    state.runner = cast(Any, FailingRunner())
    state.rules = PipelineRules(video=True, frame_step=4, default_frames=5)
    state.ready.set()
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(build_app(state), http="h11", loop="asyncio",
                                           lifespan="off", log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    port = sock.getsockname()[1]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                          trust_env=False) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_failed_video_job_reports_its_error(failing: httpx.Client) -> None:
    body, content_type = multipart({"prompt": "waves", "width": 32, "height": 16})
    answer = failing.post("/v1/videos", content=body, headers={"Content-Type": content_type})
    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert job["num_frames"] == 5 and job["size"] == "32x16"  # the model's default frames
    deadline = time.monotonic() + 30
    while job["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
        job = failing.get(f"/v1/videos/{job['id']}").json()
    answer = failing.get(f"/v1/videos/{job['id']}")
    job = answer.json()
    assert answer.status_code == 500 and job["status"] == "failed"  # as vLLM-Omni 0.30
    assert job["error"]["message"] == "ValueError: cannot render 32x16"
    content = failing.get(f"/v1/videos/{job['id']}/content")
    assert content.status_code == 422
    assert content.json()["error"]["type"] == "UnprocessableEntityError"
    sync = failing.post("/v1/videos/sync", content=body, headers={"Content-Type": content_type})
    assert sync.status_code == 500 and "cannot render" in sync.json()["error"]["message"]
    assert failing.get("/health").json() == {"status": "healthy"}
    assert failing.get("/v1/videos/video_gen_unknown").status_code == 404
