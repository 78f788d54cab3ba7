"""The persistent compile cache: one inductor folder per model, shared by its profiles, under the
cache dir, given to engine workers (the benchmark benchmarks/compile_cache.py measures
what it saves)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_omni_perf.engines.base import EngineSpec
from pytest_omni_perf.engines.compile_cache import compile_cache_dir, compile_cache_env


def spec(model: str, profile: str, cache_dir: str = "/c") -> EngineSpec:
    return EngineSpec(model=model, profile_name=profile, options={}, backend="diffusers",
                      cache_dir=cache_dir)


def test_one_folder_per_model_shared_by_its_profiles() -> None:
    """compile_cachedit reuses compile's graphs (18.8 s -> 5.6 s first request, tiny Flux)."""
    env = compile_cache_env(spec("tiny-flux", "compile"), environ={})
    assert env["TORCHINDUCTOR_CACHE_DIR"] == "/c/compile/tiny-flux"
    assert env["TRITON_CACHE_DIR"] == "/c/compile/tiny-flux/triton"
    assert env["TORCHINDUCTOR_FX_GRAPH_CACHE"] == env["TORCHINDUCTOR_AUTOGRAD_CACHE"] == "1"
    folders = {compile_cache_dir(spec(m, p)) for m in ("tiny-flux", "tiny-wan")
               for p in ("compile", "compile_cachedit", "fp8")}
    assert folders == {Path("/c/compile/tiny-flux"), Path("/c/compile/tiny-wan")}


def test_model_paths_become_safe_distinct_names() -> None:
    a = compile_cache_dir(spec("/models/a/Qwen-Image", "compile"))
    b = compile_cache_dir(spec("/other/a/Qwen-Image", "compile"))
    assert a != b and a.parent == b.parent == Path("/c/compile")
    assert a.name.startswith("models_a_Qwen-Image-") and "/" not in a.name


def test_default_cache_dir_when_none_is_given(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("OMNI_PERF_CACHE_DIR", str(tmp_path))
    assert compile_cache_dir(spec("tiny-flux", "eager", "")) == \
        tmp_path / "compile" / "tiny-flux"


def test_users_own_inductor_folder_wins() -> None:
    assert compile_cache_env(spec("tiny-flux", "compile"),
                             environ={"TORCHINDUCTOR_CACHE_DIR": "/mine"}) == {}


def test_diffusers_engine_worker_runs_with_it(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The real worker process's environment names the folder (read from /proc)."""
    from pytest_omni_perf import builtin_models
    from pytest_omni_perf.engines import diffusers_engine
    from pytest_omni_perf.hardware import HardwareInfo

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    (tmp_path / "models").symlink_to(builtin_models.ensure_model("tiny-flux").parent)
    engine = diffusers_engine.create(spec("tiny-flux", "eager", str(tmp_path)), HardwareInfo())
    engine.start()
    try:
        environ = Path(f"/proc/{engine.pids()[0]}/environ").read_bytes().split(b"\0")
    finally:
        engine.stop()
    expected = f"TORCHINDUCTOR_CACHE_DIR={tmp_path}/compile/tiny-flux".encode()
    assert expected in environ


def test_server_process_runs_with_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The omni-server backend's server process gets the same folder (read from /proc)."""
    from pytest_omni_perf import builtin_models
    from pytest_omni_perf.engines import omni_server
    from pytest_omni_perf.hardware import HardwareInfo

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    (tmp_path / "models").symlink_to(builtin_models.ensure_model("tiny-flux").parent)
    server = EngineSpec(
        model="tiny-flux", profile_name="eager", options={}, backend="omni-server",
        cache_dir=str(tmp_path), start_timeout_s=300,
        server_command="{python} -m pytest_omni_perf.serve {model} --omni --port {port}")
    engine = omni_server.create(server, HardwareInfo())
    engine.start()
    try:
        environ = Path(f"/proc/{engine.pids()[0]}/environ").read_bytes().split(b"\0")
    finally:
        engine.stop()
    assert f"TORCHINDUCTOR_CACHE_DIR={tmp_path}/compile/tiny-flux".encode() in environ
