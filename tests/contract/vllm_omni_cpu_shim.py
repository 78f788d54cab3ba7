"""Make vLLM-Omni 0.30 importable on a CPU-only machine, for contract tests.

PyPI's torchvision, torchaudio and torchcodec wheels that vllm-omni pulls in are CUDA builds
whose compiled extensions do not load against the CPU torch, so ``import vllm_omni`` fails
("operator torchvision::nms does not exist"). Nothing these tests touch (configs, the
``vllm serve --omni`` argument parser, the model registry and classes) runs those ops, so
the workarounds below only let the imports succeed:

- register schema-only ``torchvision::nms`` / ``qnms`` ops, because torchvision's meta
  registrations call ``register_fake`` on them at import time;
- make torchaudio's extension loader report "no library" instead of loading a CUDA one;
- hide torchcodec, whose import loads CUDA-linked FFmpeg bindings.

Running a model still does not work here. ``scripts/install-vllm-omni-cpu.sh VENV`` builds
the venv these tests run in.

Besides the import fix, helpers that resolve options exactly as vLLM-Omni does, stopping before
any worker starts: :func:`parse_serve_args`, :func:`config_from_kwargs`,
:func:`resolve_diffusion_config` (``Omni(model, **kwargs)``) and :func:`resolve_serve_config`
(``vllm serve MODEL --omni FLAGS``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vllm_omni.diffusion.data import OmniDiffusionConfig

_prepared = False
_serve_parser: argparse.ArgumentParser | None = None
# Keeps the torch.library.Library that owns the schema-only ops alive: dropping it would
# deregister them.
_keepalive: list[Any] = []


def _register_torchvision_schemas() -> None:
    import torch

    try:
        torch.ops.torchvision.nms.default
        return  # a real (CPU) torchvision build already defines the ops
    except (AttributeError, RuntimeError):
        pass
    # Same schemas as torchvision's csrc; no kernels, nothing here calls them.
    lib: Any = getattr(torch.library, "Library")("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _keepalive.append(lib)


def _stub_torchaudio_loader() -> None:
    if "torchaudio" in sys.modules:
        return  # already imported (it worked, or it is too late to help)
    spec = importlib.util.find_spec("torchaudio")
    if spec is None or spec.submodule_search_locations is None:
        return
    utils_path = Path(next(iter(spec.submodule_search_locations))) / "_extension" / "utils.py"
    utils_spec = importlib.util.spec_from_file_location("torchaudio._extension.utils", utils_path)
    if utils_spec is None or utils_spec.loader is None:
        return
    module = importlib.util.module_from_spec(utils_spec)
    # Registered before torchaudio/_extension/__init__ runs, so its `from .utils import
    # _load_lib` gets this module, whose loader says "no such library" (a supported state:
    # torchaudio then runs without its C++ extension).
    sys.modules["torchaudio._extension.utils"] = module
    utils_spec.loader.exec_module(module)
    module._load_lib = lambda lib: False  # type: ignore[attr-defined]


def _cuda_wheel(package: str) -> bool:
    # The PyPI wheels' metadata says "0.28.0" while their version.py says "0.28.0+cu130";
    # read the file's text rather than importing the package, which is what fails.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return False
    version_file = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", version_file.read_text(encoding="utf-8"))
    except OSError:
        return False
    return match is not None and "+cu" in match.group(1)


def prepare_vllm_omni_import() -> None:
    """Apply the in-process CPU workarounds; call before the first ``import vllm_omni``.

    Idempotent, and a no-op for each package that is not the CUDA-build-beside-CPU-torch
    case, so it is harmless where torchvision and friends really work. Also sets
    ``HF_HUB_OFFLINE=1`` unless set, because a hub id makes vLLM-Omni retry the network for
    a minute.
    """
    global _prepared
    if _prepared:
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if torch.version.cuda is None:
        if _cuda_wheel("torchvision") and "torchvision" not in sys.modules:
            _register_torchvision_schemas()
        if _cuda_wheel("torchaudio"):
            _stub_torchaudio_loader()
        # None in sys.modules makes `import torchcodec` raise ImportError, which its
        # importers (torchaudio, vLLM-Omni's audio models) treat as "not installed".
        sys.modules.setdefault("torchcodec", None)  # type: ignore[arg-type]
    _prepared = True


def _build_serve_parser() -> argparse.ArgumentParser:
    global _serve_parser
    if _serve_parser is not None:
        return _serve_parser
    prepare_vllm_omni_import()
    # The plugin's own builder, so these tests parse with exactly what it checks against.
    from pytest_omni_perf.engines.omni_options import build_root_parser

    parser: argparse.ArgumentParser = build_root_parser()
    _serve_parser = parser
    return parser


def parse_serve_args(model_folder: str | os.PathLike[str], flags: list[str]) -> argparse.Namespace:
    """Parse ``vllm serve MODEL --omni *flags`` as vLLM-Omni 0.30 does, and validate them.

    Raises ValueError (with argparse's message) for an unknown flag or a bad value, where
    the real CLI would exit with status 2. The parser is built once per process (~9 s).
    """
    parser = _build_serve_parser()
    from vllm_omni.entrypoints.cli.serve import OmniServeCommand

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = parser.parse_args(["serve", str(model_folder), "--omni", *flags])
    except SystemExit as exc:
        raise ValueError(stderr.getvalue().strip() or f"argparse exited with {exc.code}") from None
    OmniServeCommand().validate(args)
    return args


def config_from_kwargs(model_folder: str | os.PathLike[str], **kwargs: Any) -> OmniDiffusionConfig:
    """Build an ``OmniDiffusionConfig`` as ``Omni(model_folder, **kwargs)`` would validate it.

    The pipeline class comes from the folder's model_index.json (``_class_name``) unless
    ``model_class_name`` is given. Parallel fields must be nested (``parallel_config={...}``):
    ``from_kwargs`` rejects flat ones that ``Omni()`` itself would fold in.
    """
    prepare_vllm_omni_import()
    from vllm_omni.diffusion.data import OmniDiffusionConfig

    if "model_class_name" not in kwargs:
        index = Path(model_folder) / "model_index.json"
        kwargs["model_class_name"] = json.loads(index.read_text())["_class_name"]
    return OmniDiffusionConfig.from_kwargs(model=str(model_folder), **kwargs)


def resolve_diffusion_config(
    model_folder: str | os.PathLike[str], **kwargs: Any
) -> OmniDiffusionConfig:
    """Build the ``OmniDiffusionConfig`` that ``Omni(model_folder, **kwargs)`` would hand its worker.

    Follows Omni's own ingress (flat parallel fields accepted, ``quantization`` alias,
    unknown fields rejected): ``prepare_stage_config_inputs`` -> ``resolve_omni_config`` ->
    the stage's engine-args dict -> ``extract_diffusion_stage_config_kwargs``, stopping
    before the device-count check and the worker start that need GPUs.
    """
    prepare_vllm_omni_import()
    from vllm_omni.config.omni_config import extract_diffusion_stage_config_kwargs
    from vllm_omni.config.resolver import resolve_omni_config
    from vllm_omni.diffusion.data import OmniDiffusionConfig
    from vllm_omni.engine.stage_init_utils import build_engine_args_dict_from_omni_stage_config
    from vllm_omni.entrypoints.utils import prepare_stage_config_inputs

    model = str(model_folder)
    inputs = prepare_stage_config_inputs(model, kwargs, trust_remote_code=None)
    resolution = resolve_omni_config(
        inputs.model,
        trust_remote_code=inputs.trust_remote_code,
        cli_overrides=inputs.kwargs,
        deploy_config_path=inputs.deploy_config_path,
        stage_overrides=inputs.stage_overrides,
        strategy_config_path=inputs.strategy_config_path,
    )
    stage = resolution.stage_configs[0]
    engine_args = build_engine_args_dict_from_omni_stage_config(stage, inputs.model)
    diffusion_kwargs = extract_diffusion_stage_config_kwargs(
        engine_args, stage_id=0, include_engine_adapter_metadata=True
    )
    return OmniDiffusionConfig(**{k: v for k, v in diffusion_kwargs.items() if v is not None})


def resolve_serve_config(
    model_folder: str | os.PathLike[str], flags: list[str]
) -> OmniDiffusionConfig:
    """Build the ``OmniDiffusionConfig`` that ``vllm serve MODEL --omni *flags`` would use.

    The server hands ``args.get_explicit_kwargs_dict()`` (only the flags typed) to
    ``AsyncOmni(model, **kwargs)``, so this resolves those kwargs like
    :func:`resolve_diffusion_config`.
    """
    args = parse_serve_args(model_folder, flags)
    kwargs = dict(args.get_explicit_kwargs_dict())
    for cli_only in ("subparser", "model_tag", "model", "omni"):
        kwargs.pop(cli_only, None)
    return resolve_diffusion_config(model_folder, **kwargs)
