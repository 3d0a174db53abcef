"""The floating-point precision a transformer run computes in: float32, or bfloat16
autocast where the hardware computes bfloat16 natively.

The config's ``precision`` is ``auto`` (the transformer tasks' default), ``fp32`` or
``bf16``; :func:`resolve_precision` turns it into the precision used, which the run
records in ``metrics.json``. The rule of ``auto`` (:func:`choose_precision`):

- CUDA: bfloat16 where ``torch.cuda.is_bf16_supported(including_emulation=False)``
  (compute capability 8.0 and newer, or ROCm).
- CPU, where Linux lists the CPUID flags (``/proc/cpuinfo``): bfloat16 where the
  flags hold ``amx_bf16`` (AMX tiles: bfloat16 matrix products several times faster
  than float32), and where they hold ``avx512_bf16`` alone if a timed probe finds
  bfloat16 not slower (:func:`bf16_probe`; on this project's AVX512-BF16 CPU without
  AMX, a 256 x 256 bfloat16 product took 1.8x the float32 time and bfloat16
  autocast of a MiniLM ``Linear(384, 1536)`` on 8,192 tokens 1.2-1.3x, so native
  AVX512-BF16 alone does not make bfloat16 pay); never where oneDNN (torch's kernels for
  bfloat16 matrix products) is capped below ``AVX512_CORE_BF16`` by
  ``ONEDNN_MAX_CPU_ISA`` (or the older ``DNNL_MAX_CPU_ISA``: e.g. ``AVX2``,
  ``AVX512_CORE``), or ATen's CPU capability is ``DEFAULT`` (``ATEN_CPU_CAPABILITY=
  default``: unvectorised element-wise kernels, bfloat16 additions 3x slower than
  float32 here). Under ``ONEDNN_MAX_CPU_ISA=AVX2``, square bfloat16 matrix
  products of 128 to 512 took 30-160x the float32 time on this project's CPU
  (AVX512-BF16, torch 2.13), whose flags say bfloat16 is native.
- CPU without flags to read (not Linux; Linux on ARM lists ``Features``, not
  ``flags``): a timed probe, bfloat16 where a 256 x 256 bfloat16 matrix product is
  not slower than the float32 one (:func:`bf16_probe`, a few milliseconds).
- any other device: float32.

Not ``torch.backends.mkldnn`` or ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``:
they are true on every AVX-512 CPU, also those that only emulate bfloat16.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")
"""Values of the config's ``precision``."""
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPUID flags (as Linux names them) of CPUs that compute bfloat16 natively."""
CPUINFO = Path("/proc/cpuinfo")
ISA_CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
"""oneDNN's cap on the instruction sets it dispatches to, new name first."""
ISAS_BELOW_BF16 = frozenset(
    {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}
)
"""oneDNN ISA caps below ``AVX512_CORE_BF16``: oneDNN emulates bfloat16 under them."""
ISAS_WITH_BF16 = frozenset(
    {
        "AVX512_CORE_BF16",
        "AVX512_CORE_FP16",
        "AVX10_1_512",
        "AVX512_CORE_AMX",
        "AVX10_1_512_AMX",
        "AVX512_CORE_AMX_FP16",
        "AVX10_1_512_AMX_FP16",
        "AVX10_2_512",
        "AVX10_2_512_AMX_2",
        "ALL",
        "DEFAULT",
    }
)
"""oneDNN ISA caps that allow its native bfloat16 kernels; another value is taken as
no cap (as oneDNN does), with a warning."""


def cpu_flags() -> frozenset[str] | None:
    """The CPUID flags of the first processor in ``/proc/cpuinfo`` (its ``flags``
    line), or None where there is none (not Linux, or not x86)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return None


def cpu_kind() -> dict[str, Any]:
    """What a run's speed depends on, for the record of each run (``metrics.json``'s
    ``host.cpu``) and the per-run time table (``benchmarks/run_times.csv``).

    Returns:
        ``model`` (``/proc/cpuinfo``'s ``model name``, or ``platform.processor()``),
        ``capability`` (ATen's vector kernels, ``torch.backends.cpu.
        get_cpu_capability()``: ``"AVX512"``, ``"AVX2"``, ``"DEFAULT"``, ...),
        ``isa_cap`` (``"ONEDNN_MAX_CPU_ISA=AVX2"`` or None), ``native_bf16_flags``
        (those of :data:`NATIVE_BF16_FLAGS` the CPU lists; None where no flags are
        listed) and ``kind``: ``"<capability>"`` plus ``"+bf16"`` where native
        bfloat16 is listed and not capped away, e.g. ``"AVX2"``, ``"AVX512+bf16"``.
    """
    model = None
    try:
        for line in CPUINFO.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
                break
    except OSError:
        pass
    flags = cpu_flags()
    native = None if flags is None else [f for f in NATIVE_BF16_FLAGS if f in flags]
    cap = isa_cap()
    capability = torch.backends.cpu.get_cpu_capability()
    bf16 = bool(native) and not (cap is not None and cap[1] in ISAS_BELOW_BF16)
    return {
        "model": model or platform.processor() or platform.machine(),
        "capability": capability,
        "isa_cap": None if cap is None else f"{cap[0]}={cap[1]}",
        "native_bf16_flags": native,
        "kind": capability + ("+bf16" if bf16 and capability != "DEFAULT" else ""),
    }


def isa_cap() -> tuple[str, str] | None:
    """oneDNN's ISA cap from the environment, ``(variable, VALUE)``, or None."""
    for name in ISA_CAP_VARIABLES:
        value = os.environ.get(name, "").strip().upper()
        if value:
            return name, value
    return None


def bf16_probe(size: int = 256, repeats: int = 5) -> tuple[float, float]:
    """Seconds of one ``size`` x ``size`` matrix product in float32 and in bfloat16
    on the CPU, the best of ``repeats`` after a warm-up each."""
    a = torch.randn(size, size)
    times = []
    for dtype in (torch.float32, torch.bfloat16):
        x = a.to(dtype)
        x @ x  # warm-up: kernel selection, first-touch memory
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            x @ x
            best = min(best, time.perf_counter() - t0)
        times.append(best)
    return times[0], times[1]


def _cpu_bf16() -> tuple[bool, str]:
    """Whether this CPU computes bfloat16 natively, and why (the rule in the module
    docs)."""
    flags = cpu_flags()
    if flags is None:
        fp32, bf16 = bf16_probe()
        verdict = "not slower" if bf16 <= fp32 else "slower"
        return bf16 <= fp32, (
            f"no CPU flags to read; a bfloat16 matrix product is {verdict} than float32 "
            f"({bf16 * 1e3:.3g} ms against {fp32 * 1e3:.3g} ms)"
        )
    native = [f for f in NATIVE_BF16_FLAGS if f in flags]
    if not native:
        return False, "CPU without native bfloat16 (flags: no avx512_bf16/amx_bf16)"
    cap = isa_cap()
    if cap is not None and cap[1] in ISAS_BELOW_BF16:
        return False, f"{cap[0]}={cap[1]} caps oneDNN below AVX512_CORE_BF16"
    if cap is not None and cap[1] not in ISAS_WITH_BF16:
        log.warning("%s=%s is not an ISA this project knows: taken as no cap", *cap)
    if torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        return False, "ATen's CPU capability is DEFAULT (ATEN_CPU_CAPABILITY): no vector kernels"
    if "amx_bf16" in native:
        return True, f"CPU with native bfloat16 (flags: {'/'.join(native)})"
    fp32, bf16 = bf16_probe()
    verdict = "not slower" if bf16 <= fp32 else "slower"
    return bf16 <= fp32, (
        f"CPU with native bfloat16 (flags: avx512_bf16) but no AMX, where a bfloat16 "
        f"matrix product is {verdict} than float32 ({bf16 * 1e3:.3g} ms against "
        f"{fp32 * 1e3:.3g} ms)"
    )


def _native_bf16(device: torch.device) -> tuple[bool, str]:
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return True, "CUDA device with native bfloat16"
        return False, "CUDA device without native bfloat16 (compute capability < 8.0)"
    if device.type == "cpu":
        return _cpu_bf16()
    return False, f"no bfloat16 rule for device type {device.type!r}"


def choose_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """The precision a run on ``device`` uses, and why.

    ``"fp32"`` and ``"bf16"`` are used as given (forcing bfloat16 where it is not
    native logs a warning: every step is slower); ``"auto"`` gives ``"bf16"`` where
    ``device`` computes bfloat16 natively, else ``"fp32"`` (the rule in the module
    docs).

    Returns:
        ``(precision, reason)``, e.g. ``("fp32", "auto: CPU without native bfloat16
        (flags: no avx512_bf16/amx_bf16)")``.

    Raises:
        ValueError: ``requested`` is not one of :data:`PRECISIONS`.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested == "fp32":
        return "fp32", "fp32: set in the config"
    native, why = _native_bf16(device)
    if requested == "bf16":
        if not native:
            log.warning("precision bf16 set in the config, but %s: steps will be slower", why)
        return "bf16", "bf16: set in the config"
    return ("bf16" if native else "fp32"), f"auto: {why}"


def resolve_precision(requested: str, device: torch.device) -> str:
    """``"fp32"`` or ``"bf16"``: the precision ``requested`` (``"auto"``, ``"fp32"``
    or ``"bf16"``) resolves to on ``device``. ``auto`` is bfloat16 autocast only
    where ``device`` computes bfloat16 natively and it pays: a CUDA device with
    ``torch.cuda.is_bf16_supported(including_emulation=False)``; a CPU, with oneDNN
    not capped below ``AVX512_CORE_BF16`` (``ONEDNN_MAX_CPU_ISA``) and ATen's CPU
    capability not ``DEFAULT``, whose CPUID flags hold ``amx_bf16``, or hold
    ``avx512_bf16`` and a bfloat16 matrix product is not slower than a float32 one;
    a CPU without flags to read (not Linux) where that probe says so. Else float32. See
    :func:`choose_precision` for the reason as well.

    Raises:
        ValueError: ``requested`` is not one of :data:`PRECISIONS`.
    """
    return choose_precision(requested, device)[0]
