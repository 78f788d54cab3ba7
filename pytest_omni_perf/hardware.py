"""What hardware is here: GPUs through NVML (imported lazily), the hardware key, the fingerprint.

torch is never imported here: initializing CUDA in the pytest process would pin memory on
every GPU and break the per-worker ``CUDA_VISIBLE_DEVICES`` split under xdist.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

# Re-exported: the probe's types live below it, where ``accelerators`` can import them too.
from pytest_omni_perf.hardware_info import CPU_KEY as CPU_KEY
from pytest_omni_perf.hardware_info import GpuInfo as GpuInfo
from pytest_omni_perf.hardware_info import HardwareInfo as HardwareInfo
from pytest_omni_perf.hardware_info import hardware_key as hardware_key

_VERSIONED_PACKAGES = ("torch", "diffusers", "transformers", "cache-dit", "torchao", "vllm",
                       "vllm-omni", "numpy", "scikit-image", "pytest")


def _visible_filter(count: int, uuids: Sequence[str]) -> tuple[list[int], str | None]:
    """Physical indices allowed by CUDA_VISIBLE_DEVICES (NVML itself ignores that variable),
    and the first entry that names no GPU here (CUDA stops there), if any."""
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return list(range(count)), None
    chosen: list[int] = []
    for token in (t.strip() for t in raw.split(",")):
        if not token:
            continue
        if token.isdigit():
            index = int(token)
        else:
            matches = [i for i, u in enumerate(uuids) if u.startswith(token)]
            if not matches:
                return chosen, token  # CUDA stops at the first entry it cannot resolve
            index = matches[0]
        if not 0 <= index < count:
            return chosen, token
        chosen.append(index)
    return chosen, None


def _mig_slices(pynvml: Any, handles: Sequence[Any], uuids: Sequence[str]
                ) -> list[tuple[tuple[str, ...], str]]:
    """Every MIG slice NVML knows: (the names CUDA_VISIBLE_DEVICES may give it, a
    description). A slice is named ``MIG-<uuid>`` (driver >= 470) or
    ``MIG-<parent GPU uuid>/<GPU instance>/<compute instance>`` (older drivers)."""
    slices: list[tuple[tuple[str, ...], str]] = []
    for index, handle in enumerate(handles):
        try:
            current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
        except pynvml.NVMLError:
            continue  # NotSupported: a GPU without MIG
        if current != pynvml.NVML_DEVICE_MIG_ENABLE:
            continue
        for slot in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
            try:
                mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except pynvml.NVMLError:
                continue  # NotFound: an unused slot
            legacy = (f"MIG-{uuids[index]}/{pynvml.nvmlDeviceGetGpuInstanceId(mig)}/"
                      f"{pynvml.nvmlDeviceGetComputeInstanceId(mig)}")
            gib = pynvml.nvmlDeviceGetMemoryInfo(mig).total / 2**30
            name = _decode(pynvml.nvmlDeviceGetName(mig))
            slices.append(((_decode(pynvml.nvmlDeviceGetUUID(mig)), legacy),
                           f"{name}, {gib:.1f} GiB, on GPU {index}"))
    return slices


def _refuse_mig(pynvml: Any, handles: Sequence[Any], uuids: Sequence[str]) -> None:
    """A usage error when CUDA_VISIBLE_DEVICES names a MIG slice.

    Engines get whole GPUs: the plugin leases GPUs by physical index and starts each engine
    with ``CUDA_VISIBLE_DEVICES=<index>``, which on a GPU in MIG mode is not the slice the
    user chose. Taking the slice for "no GPU" moved the whole run to the ``cpu`` key
    silently; stopping says what is wrong.
    """
    raw = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    tokens = [t.strip() for t in raw.split(",") if t.strip().startswith("MIG-")]
    if not tokens:
        return
    try:
        slices = _mig_slices(pynvml, handles, uuids)
        found = [what for names, what in slices
                 if any(n == t or n.startswith(t) for n in names for t in tokens)]
        seen = "; ".join(found) if found else "no MIG slice of that name here"
    except (AttributeError, pynvml.NVMLError) as exc:  # an NVML without MIG support
        seen = f"NVML here cannot list MIG slices ({type(exc).__name__}: {exc})"
    raise pytest.UsageError(
        f"CUDA_VISIBLE_DEVICES={raw!r} names a MIG slice ({seen}). pytest-omni-perf places "
        "each engine on whole GPUs (it starts engines with CUDA_VISIBLE_DEVICES=<GPU index>), "
        "so it cannot measure on a MIG slice: set CUDA_VISIBLE_DEVICES to a whole GPU "
        "(an index or GPU-<uuid>), or to an empty value for a CPU run.")


@contextmanager
def nvml() -> Iterator[Any]:
    """The initialized ``pynvml`` module; ImportError or its NVMLError when unusable."""
    import pynvml

    pynvml.nvmlInit()
    try:
        yield pynvml
    finally:
        pynvml.nvmlShutdown()


def _sm_pair(value: Any) -> tuple[int, int]:
    major, minor = value
    return int(major), int(minor)


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def probe() -> HardwareInfo:
    """Visible GPUs from NVML, else ROCm GPUs or Ascend NPUs named through torch
    (``accelerators``); a HardwareInfo saying why when there are none."""
    found = _probe_nvml()
    if found.gpus:
        return found
    from pytest_omni_perf.accelerators import probe_other

    return probe_other() or found


def _probe_nvml() -> HardwareInfo:
    try:
        with nvml() as pynvml:
            count = pynvml.nvmlDeviceGetCount()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            uuids = [_decode(pynvml.nvmlDeviceGetUUID(h)) for h in handles]
            _refuse_mig(pynvml, handles, uuids)
            visible, stopped_at = _visible_filter(count, uuids)
            gpus = []
            for index in visible:
                handle = handles[index]
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                gpus.append(GpuInfo(
                    index=index,
                    name=_decode(pynvml.nvmlDeviceGetName(handle)),
                    sm=_sm_pair(pynvml.nvmlDeviceGetCudaComputeCapability(handle)),
                    vram_gib=memory.total / 2**30,
                    uuid=uuids[index],
                ))
            cuda = pynvml.nvmlSystemGetCudaDriverVersion_v2()
            return HardwareInfo(
                gpus=tuple(gpus),
                driver=_decode(pynvml.nvmlSystemGetDriverVersion()),
                cuda_driver=f"{cuda // 1000}.{cuda % 1000 // 10}",
                note="nvml" if gpus else _why_none(count, stopped_at),
            )
    except ImportError:
        return HardwareInfo(note=no_nvml_note("nvidia-ml-py not installed"))
    except pytest.UsageError:
        raise
    except Exception as exc:  # NVMLError has many subclasses; any of them means no GPU here
        return HardwareInfo(note=no_nvml_note(f"NVML unavailable: {exc}"))


def no_nvml_note(why: str, dev: Path = Path("/dev")) -> str:
    """Why no GPU was found, true to the machine: NVML's own problem (a missing
    nvidia-ml-py, no driver library) only matters where the NVIDIA driver shows a device
    (/dev/nvidia0..., or /dev/dxg under WSL); elsewhere there is simply no GPU."""
    if any(dev.glob("nvidia[0-9]*")) or (dev / "dxg").exists():
        return why
    return f"no NVIDIA GPU device in {dev}"


def _why_none(count: int, stopped_at: str | None) -> str:
    if stopped_at is not None:
        return (f"CUDA_VISIBLE_DEVICES entry {stopped_at!r} names none of the {count} GPU(s) "
                "NVML sees, and CUDA ignores everything from it on")
    return "NVML found no visible GPU"


def installed_versions(distributions: Mapping[str, str], *,
                       missing: str | None = "not installed") -> dict[str, str]:
    """``{key: version}`` of each distribution that ``distributions`` maps a key to, read
    with ``importlib.metadata.version`` (nothing is imported). A distribution that is not
    installed gets ``missing``, or is left out where ``missing`` is None."""
    versions = {}
    for key, distribution in distributions.items():
        try:
            versions[key] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            if missing is not None:
                versions[key] = missing
    return versions


def package_versions() -> dict[str, str]:
    """Installed versions of the packages whose change moves the numbers (no imports)."""
    return installed_versions({name: name for name in _VERSIONED_PACKAGES}, missing=None)


def gpu_clocks(indices: Sequence[int]) -> list[dict[str, Any]]:
    """SM clock, temperature and throttle reasons now: they explain slow runs."""
    try:
        with nvml() as pynvml:
            readings = []
            for index in indices:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                readings.append({
                    "index": index,
                    "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
                    "temperature_c": pynvml.nvmlDeviceGetTemperature(
                        handle, pynvml.NVML_TEMPERATURE_GPU),
                    "throttle_reasons": int(
                        pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle)),
                })
            return readings
    except Exception:  # fingerprints are best effort; a missing clock must not fail a test
        return []


def fingerprint(hw: HardwareInfo, devices: Sequence[int] = ()) -> dict[str, Any]:
    """Environment fingerprint stored with every result and baseline."""
    used = [g for g in hw.gpus if not devices or g.index in devices]
    return {
        "hardware_key": hw.key,
        "gpus": [{"name": g.name, "sm": f"{g.sm[0]}.{g.sm[1]}", "vram_gib": round(g.vram_gib, 1),
                  "index": g.index} for g in used],
        "driver": hw.driver,
        "cuda_driver": hw.cuda_driver,
        "clocks": gpu_clocks([g.index for g in used]),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "versions": package_versions(),
    }


def names_this_machine(key: str, gpu_names: Sequence[str], hardware_key: str) -> bool:
    """Whether a key of a per-hardware table (``H100``, ``nvidia-h100-80gb-hbm3``, ``cpu``)
    names this machine: the plugin's hardware key itself, or a word of a GPU's model name
    (``H100`` in ``NVIDIA H100 80GB HBM3``), case-insensitively. No GPU: only ``cpu``."""
    wanted = key.strip().lower()
    if wanted == hardware_key:
        return True
    return any(wanted in re.split(r"[^a-z0-9]+", name.lower()) for name in gpu_names)


def key_for_this_machine(keys: Iterable[object], gpu_names: Sequence[str],
                         hardware_key: str) -> str | None:
    """The first of a per-hardware table's ``keys`` that names this machine (see
    :func:`names_this_machine`; keys that are not strings name nothing), or None."""
    return next((k for k in keys
                 if isinstance(k, str) and names_this_machine(k, gpu_names, hardware_key)),
                None)
