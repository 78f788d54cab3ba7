"""Which import makes a fork unable to use CUDA, and who asked CUDA for it?

    python scripts/gpu-fork-check.py [--pipelines FluxPipeline,WanPipeline]

Run in a fresh interpreter per setting of PYTORCH_NVML_BASED_CUDA_CHECK (unset, "1"): import
what the zygote imports (engines/zygote.py: torch, transformers, diffusers, each pipeline
class) one step at a time and after each step fork a probe child that reads torch's own
"bad fork" flag (``torch._C._cuda_isInBadFork``: set in every child forked after the parent
touched the CUDA runtime, torch/csrc/cuda/Module.cpp ``poison_fork``). A profiler hook
(``sys.setprofile``, which sees calls into C functions) records every call of a ``torch._C``
function whose name mentions cuda, device or accelerator, with the Python frames that made
it. At the end a last child tries CUDA for real. Prints one JSON line per setting. Needs a GPU.

The third setting adds ``OMNI_PERF_ZYGOTE_SM`` (GPU 0's capability from NVML): each step is
imported with torch's device queries answered from it, as the zygote does
(engines/device_answers.py); the last child then compares ``has_triton()``'s cached answer
with a fresh one and runs a matmul.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

PROBE = r'''
import json, os, sys, traceback
calls = []
def watch(frame, event, arg):
    if event == "c_call":
        name = getattr(arg, "__name__", "")
        module = getattr(arg, "__module__", "") or ""
        if any(k in name.lower() for k in ("cuda", "device_count", "accelerator", "nvml", "lazy_init")):
            stack = traceback.format_stack(frame, limit=6)
            calls.append({"fn": f"{module}.{name}", "step": step, "stack": "".join(stack)})
def bad_fork():
    import torch
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            os.write(write, str(bool(torch._C._cuda_isInBadFork())).encode())
        except Exception as exc:
            os.write(write, f"{type(exc).__name__}: {exc}".encode())
        os._exit(0)
    os.close(write)
    answer = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    return answer
steps = [("torch", "import torch"), ("transformers", "import transformers"),
         ("diffusers", "import diffusers")]
steps += [(name, f"import diffusers; diffusers.{name}") for name in sys.argv[1].split(",")]
result = {"nvml_check": os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK"), "steps": [],
          "sm_answered": os.environ.get("OMNI_PERF_ZYGOTE_SM")}
from contextlib import nullcontext
if result["sm_answered"]:  # as the zygote does (engines/device_answers.py)
    from pytest_omni_perf.engines.device_answers import answered, parse_sm
    wrap = lambda: answered(parse_sm(result["sm_answered"]))
else:
    wrap = nullcontext
for step, code in steps:
    sys.setprofile(watch)
    try:
        with wrap():
            exec(code)
    finally:
        sys.setprofile(None)
    import torch
    result["steps"].append({"step": step, "child_in_bad_fork": bad_fork(),
                            "parent_cuda_initialized": torch.cuda.is_initialized()})
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(read)
    try:
        # What the imports kept (has_triton's cache) against what CUDA says now.
        import torch.utils._triton as triton_utils
        cuda = torch.ones(64, 64, device="cuda")
        answer = json.dumps({
            "capability": list(torch.cuda.get_device_capability(0)),
            "has_triton_cached": triton_utils.has_triton(),
            "has_triton_fresh": triton_utils.has_triton.__wrapped__(),
            "get_device_properties": torch.cuda.get_device_properties.__name__,
            "matmul_sum": float((cuda @ cuda).sum())})
    except Exception as exc:
        answer = f"{type(exc).__name__}: {exc}"
    os.write(write, answer.encode())
    os._exit(0)
os.close(write)
result["child_cuda"] = os.read(read, 4096).decode()
os.waitpid(pid, 0)
result["calls"] = calls[:40]
result["call_count"] = len(calls)
print(json.dumps(result))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipelines", default="FluxPipeline,WanPipeline")
    args = parser.parse_args()
    import pynvml

    pynvml.nvmlInit()
    major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(pynvml.nvmlDeviceGetHandleByIndex(0))
    pynvml.nvmlShutdown()
    for setting, sm in ((None, None), ("1", None), ("1", f"{major}.{minor}")):
        env = dict(os.environ)
        env.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
        env.pop("OMNI_PERF_ZYGOTE_SM", None)
        if setting is not None:
            env["PYTORCH_NVML_BASED_CUDA_CHECK"] = setting
        if sm is not None:
            env["OMNI_PERF_ZYGOTE_SM"] = sm
        done = subprocess.run([sys.executable, "-c", PROBE, args.pipelines], env=env,
                              capture_output=True, text=True, timeout=300)
        print(done.stdout.strip() or json.dumps({"nvml_check": setting,
                                                 "error": done.stderr[-3000:]}), flush=True)


if __name__ == "__main__":
    main()
