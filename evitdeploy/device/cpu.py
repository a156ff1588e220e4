"""This CPU's INT8 kernel class, and whether an INT8 model made for a class holds on it.

x86 INT8 convolutions multiply uint8 activations by int8 weights. With VNNI (AVX512-VNNI,
AVX-VNNI) or AMX each u8 x s8 product goes straight into an int32 sum. Without VNNI (AVX2 only)
ONNX Runtime's and oneDNN's kernels use VPMADDUBSW, which adds each *pair* of u8 x s8 products
into a saturating int16: 2 x 255 x 127 = 64770 > 32767, so weights that use the full int8 range
give wrong sums there. 7-bit weights (|q| <= 64) bound a pair at 2 x 255 x 64 = 32640: exact on
every x86 kernel, at the same speed (the same kernels run; only the weights' values differ).

Which kernels a runtime picks is decided by CPUID. Numpy reads CPUID too, so where numpy and
/proc/cpuinfo disagree on a feature both name (under an emulator such as QEMU user mode,
/proc/cpuinfo is the host's), numpy's view wins. Python 3.8 and numpy only: a bundle carries
this module, and its verify.py names the class it finds on the device.
"""

import platform

AMX, VNNI, AVX2 = "amx", "vnni", "avx2"
ARM_DOTPROD, ARM_NEON, UNKNOWN = "arm-dotprod", "arm-neon", "unknown"
CLASSES = (AMX, VNNI, AVX2, ARM_DOTPROD, ARM_NEON, UNKNOWN)
SATURATING = (AVX2,)  # u8 x s8 pair sums saturate in int16 (VPMADDUBSW)

# What an INT8 export is made for (`--int8-kernels`, a profile's `int8_kernels`): any CPU, or x86 ones of a class.
ANY = "any"
TARGETS = (ANY, VNNI, AVX2)
WEIGHT_BITS = {ANY: 7, AVX2: 7, VNNI: 8}

MEANING = {
    AMX: "AMX tiles and VNNI: u8 x s8 products sum in int32, full 8-bit weights are exact",
    VNNI: "VNNI: u8 x s8 products sum in int32, full 8-bit weights are exact",
    AVX2: "AVX2 without VNNI: u8 x s8 pairs sum in a saturating int16 (VPMADDUBSW), so INT8 needs 7-bit weights "
    "(--int8-kernels any or avx2); INT8 is rarely faster than FP32 here",
    ARM_DOTPROD: "ARM dot-product (SDOT/UDOT): int8 products sum in int32",
    ARM_NEON: "ARM NEON without dot-product: int8 products are widened before they are summed",
    UNKNOWN: "not an x86 or ARM CPU evitdeploy knows; INT8 accuracy is whatever check measures here",
}

# /proc/cpuinfo flag -> numpy's name for the same CPUID bit (checked for agreement)
_SHARED = {"avx2": "AVX2", "avx512f": "AVX512F", "avx512_vnni": "AVX512VNNI", "asimddp": "ASIMDDP"}


def numpy_features() -> dict:
    """Numpy's CPUID view ({} where this numpy does not expose it)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__  # numpy >= 2
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__  # numpy 1.x
        except ImportError:
            return {}
    return dict(__cpu_features__)


def proc_flags(path: str = "/proc/cpuinfo") -> set:
    """The first CPU's flags (x86 "flags", ARM "Features") from /proc/cpuinfo; empty elsewhere."""
    try:
        with open(path, errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


def kernel_class(flags=None, features=None, machine=None) -> str:
    """AMX, VNNI, AVX2 (x86 without VNNI), ARM dot-product, plain NEON, or unknown."""
    flags = proc_flags() if flags is None else set(flags)
    features = numpy_features() if features is None else dict(features)
    machine = (machine or platform.machine()).lower()
    if flags and any(features.get(name) is not None and (flag in flags) != bool(features[name]) for flag, name in _SHARED.items()):
        flags = set()  # /proc/cpuinfo describes another CPU than CPUID does (an emulator): trust CPUID alone
    if machine in ("x86_64", "amd64", "i686", "x86"):
        vnni = bool(features.get("AVX512VNNI")) or "avx512_vnni" in flags or "avx_vnni" in flags
        if vnni and "amx_int8" in flags:
            return AMX
        return VNNI if vnni else AVX2
    if machine in ("aarch64", "arm64") or machine.startswith("arm"):
        return ARM_DOTPROD if features.get("ASIMDDP") or "asimddp" in flags else ARM_NEON
    return UNKNOWN


def made_for(target: str) -> str:
    """The CPUs an INT8 model is for, in words."""
    return "any CPU" if target == ANY else target.upper() + " CPUs"


def is_x86(found: str) -> bool:
    return found in (AMX, VNNI, AVX2)


def refusal(target, found: str, what: str = "this INT8 model"):
    """(message, hint) when an INT8 model made for `target` kernels cannot be judged on a CPU of
    class `found`; None when it can."""
    if target == VNNI and found in SATURATING:
        return (
            what + " is for VNNI kernels (full 8-bit weights), and this CPU is " + found.upper() + " without VNNI, where its "
            "u8 x s8 sums saturate: parity measured here would be wrong by luck, not by the model",
            "judge it on a CPU with VNNI or AMX, or export it for this CPU with --int8-kernels any (7-bit weights, exact on every x86)",
        )
    return None


def judged_note(target, found: str):
    """A line when this CPU runs other INT8 kernels than the ones the model was made for; None when
    they give the same sums (a model for any CPU has 7-bit GEMM weights, exact on every kernel class)."""
    if target in (VNNI, AVX2) and not is_x86(found):
        return "made for " + target.upper() + " x86 kernels and judged on " + found + " kernels here: the CPUs it is for run other kernels"
    if target == AVX2 and found != AVX2:
        return "made for AVX2-only CPUs and judged on " + found.upper() + " kernels here; its 7-bit weights sum exactly on both"
    return None


def describe(found=None) -> dict:
    """This CPU's class and what it means for INT8 (for doctor, bench and verify reports)."""
    found = found or kernel_class()
    return {"int8_kernels": found, "meaning": MEANING[found]}
