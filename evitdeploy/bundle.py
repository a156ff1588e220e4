"""Bundles: the folder a device takes, and verifies itself with.

A bundle is an artifact folder (the model file(s), the precision plan) plus what the device needs
to trust and check it without evitdeploy or torch: `reference.npz` (real photos, preprocessed,
with the PyTorch FP32 outputs), `verify.py` and the `evitdeploy_device/` package it runs (numpy +
the runtime only), `README.txt`, the check and bench reports made here, and a `manifest.json`
that lists the sha256 of every file.
The bundle manifest is a superset of the artifact manifest, so `evitdeploy check/bench` take a
bundle too.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import numpy as np

from evitdeploy import device, limits
from evitdeploy.device import eval_subset as eval_subset_check, integrity, pipeline_check
from evitdeploy.device.app import LABELS
from evitdeploy.device.verify import verify
from evitdeploy.artifact import MANIFEST, Artifact, read_manifest, build_manifest
from evitdeploy.files import staged_folder, write_json, write_text
from evitdeploy.errors import EXIT_BACKEND_UNAVAILABLE, UserError
from evitdeploy.spec import CLASSIFICATION, PROMPTABLE, SEGMENTATION

REFERENCE_IMAGES = 4
REFERENCE_BYTES = 4 << 20  # inputs kept under 4 MiB (at least one image): bundles stay small
VERIFY_SCRIPT = "verify.py"
README = "README.txt"
# The device code a bundle carries: evitdeploy/device/ as a package of this name (its modules
# import each other relatively), plus the target's backends/<folder>/device.py as its runtime.py.
DEVICE_PACKAGE = "evitdeploy_device"
DEVICE_FILES = tuple(sorted(path.name for path in Path(device.__file__).parent.glob("*.py")))  # every module: they import each other
DEVICE_RUNTIME = "runtime.py"
# verify.py itself only finds the package: `python3 -I verify.py` leaves the script's folder off
# sys.path, and no __pycache__ may appear in the bundle (a signed bundle must stay as signed).
VERIFY_MAIN = """\
#!/usr/bin/env python3
\"\"\"Verify this bundle here: integrity, parity with the reference outputs, latency (--help).

Needs Python 3.8+, numpy and the runtime only; the code is evitdeploy_device/, hashed in
manifest.json like every file. Exit 0 passed, 1 failed, 2 refused, 3 runtime missing.
\"\"\"
import sys
from pathlib import Path

if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    sys.dont_write_bytecode = True
    sys.path.insert(0, str(here))
    from evitdeploy_device import runtime, verify

    sys.exit(verify.main(sys.argv[1:], runtime, here))
"""


def reference_count(input_shape, wanted: int = REFERENCE_IMAGES) -> int:
    """How many reference images fit the size limit (whole batches where the batch is static)."""
    batch, channels, height, width = input_shape
    per_image = channels * height * width * 4
    fitting = max(1, min(wanted, REFERENCE_BYTES // per_image))
    return max(batch, fitting - fitting % batch)


def _input_tensor(manifest: dict) -> str:
    """The input tensor as the model file declares it (NHWC and int8 inputs say so)."""
    spec = manifest["spec"]
    declared = (manifest.get("export", {}).get("io") or {}).get("inputs")
    if declared:
        tensor = declared[0]
        quantized = f" (scale {tensor['scale']:.6g}, zero point {tensor['zero_point']}: verify.py quantizes)" if tensor["scale"] else ""
        return f"{'x'.join(map(str, tensor['shape']))} {tensor['dtype']} {spec['layout']}{quantized}"
    return f"{'x'.join(map(str, spec['input_shape']))} {spec['dtype']} {spec['layout']}"


def _readme(manifest: dict) -> str:
    bundle, spec = manifest["bundle"], manifest["spec"]
    profile = bundle["profile"]
    from evitdeploy.backends import get_backend
    from evitdeploy.device.preprocessing import describe

    runtime = get_backend(manifest["target"]).device_runtime[1]
    made_with = manifest.get("toolchain", {}).get(runtime, "?")
    check, latency = bundle["check"], bundle["latency"]
    lines = [
        f"{spec['name']} for {profile['name']}: {manifest['target']} {manifest['precision']}, made by evitdeploy {manifest['toolchain'].get('evitdeploy')}",
        f"{profile['description']}",
        "",
        *(
            _promptable_lines(manifest)
            if manifest.get("models")
            else [
                f"Model file   {manifest['model_file']}",
                f"Input        {spec['input_name']}: {_input_tensor(manifest)}, "
                f"RGB scaled to [0, 1] then (x - mean) / std with mean {spec['mean']}, std {spec['std']}",
                f"Output       {spec['output_name']}: {'per-pixel class logits' if spec['task'] == 'segmentation' else 'class logits'} "
                f"({spec['num_classes']} classes, {spec['dataset']})",
            ]
        ),
        f"Photos       {describe(spec['preprocessing'])} (evitdeploy_device/preprocess.py does it)" if spec.get("preprocessing") else "",
        "",
        "Verify on the device (needs only Python 3.8+, numpy, Pillow and the runtime):",
        f"    pip install numpy pillow {runtime}=={made_with}",
        f"    python3 {VERIFY_SCRIPT}              # integrity, parity vs PyTorch, the whole pipeline on raw photos, latency; exit 0 = passed",
        f"    python3 {VERIFY_SCRIPT} --json       # the same as JSON",
        "It first checks every file against the sha256 in manifest.json and refuses a modified bundle.",
        "",
        "Use it from an app (the same preprocessing and postprocessing verify.py checks):",
        "    import sys, numpy as np, PIL.Image",
        '    sys.path.insert(0, "path/to/this/folder")',
        "    import evitdeploy_device",
        '    model = evitdeploy_device.load("path/to/this/folder")',
        f"    result = model.predict(np.asarray(PIL.Image.open('photo.jpg').convert('RGB')){_APP_PROMPT.get(spec['task'], '')})",
        f"    {_APP_RESULT[spec['task']]}",
        *(
            [
                f"Signed ({bundle['signature']['file']}, OpenSSF model signing; key sha256 {bundle['signature']['public_key_sha256'][:16]}...): "
                "check it with the signer's public key first (needs pip install model-signing):",
                f"    python3 {VERIFY_SCRIPT} --public-key PUB.pem",
                f"    model_signing verify key --signature {bundle['signature']['file']} --public_key PUB.pem .",
            ]
            if bundle.get("signature")
            else ["Not signed: the sha256 values prove the files are consistent, not who made them."]
        ),
        "",
        f"Where it was made ({bundle['made_on']['cpu']}, {bundle['bench']['threads'] or 'default'} threads):",
        *(
            [f"    not measured there: {check['skipped']}"]
            if check.get("skipped")
            else [
                (
                    f"    parity vs PyTorch on {check['prompts']} prompts: min mask IoU {check['mask_iou_min']:.4f}, IoU-prediction max error "
                    f"{check['iou_prediction_max_error']:.2g}"
                    if "prompts" in check
                    else f"    parity vs PyTorch on {check['samples']} photos: min cosine {check['cosine_min']:.6f}, max abs error {check['max_abs_error']:.3g}"
                )
                + (", PASSED" if check["passed"] else ", FAILED"),
                f"    latency {bundle['budget']['statistic']} {latency[bundle['budget']['statistic'] + '_ms']:.2f} ms "
                + f"(budget {bundle['budget'].get('latency_ms')} ms, {'judged' if bundle['budget']['judged'] else 'not judged: ' + bundle['budget']['host']})"
                if latency
                else f"    latency not measured there: {bundle['budget']['host']}",
            ]
        ),
        *_int8_kernels_lines(manifest),
        "",
        "Commands that made it:",
        *(f"    {command}" for command in bundle["commands"].values() if command),
    ]
    if profile["notes"]:
        lines += ["", "Notes for this device:", *(f"  - {note}" for note in profile["notes"])]
    return "\n".join(lines) + "\n"


_APP_PROMPT = {PROMPTABLE: ", points=[(x, y)], box=None"}
_APP_RESULT = {
    CLASSIFICATION: 'result["top"]: [{"rank", "index", "label", "probability"}] by softmax probability',
    SEGMENTATION: 'result["class_map"]: (H, W) int32 class indices at the photo\'s size',
    PROMPTABLE: 'result["masks"]: [{"index", "score", "mask": (H, W) bool}]: one point gives the best of SAM\'s three '
    "masks, a box or several points its single mask, multimask=True all three",
}


def _int8_kernels_lines(manifest: dict) -> list[str]:
    """For an INT8 model on x86 integer kernels: which CPUs it is for, and where it was judged."""
    kernels = manifest.get("int8_kernels")
    if not kernels:
        return []
    from evitdeploy.device import cpu

    line = f"INT8 for {cpu.made_for(kernels['target'])} ({kernels['weight_bits']}-bit weights on the GEMM convolutions), judged on {kernels['judged_on']} kernels where it was made."
    note = cpu.judged_note(kernels["target"], kernels["judged_on"])
    return [
        line + (f" {note[0].upper()}{note[1:]}." if note else ""),
        "verify.py names this device's INT8 kernel class" + (" and refuses the model on a CPU without VNNI." if kernels["target"] == cpu.VNNI else "."),
    ]


def _promptable_lines(manifest: dict) -> list[str]:
    """What a SAM bundle's two models take and give (SAM's preprocessing and prompt frame)."""
    spec, models = manifest["spec"], manifest["models"]
    side, frame = 4 * spec["embedding"][-1], spec["prompt_frame"]
    return [
        f"Encoder      {models['encoder']}: {spec['input_name']} {'x'.join(map(str, spec['input_shape']))} float32 NCHW: the image resized so its longest "
        f"side is {spec['input_shape'][-1]}, RGB scaled to [0, 1], (x - mean) / std with mean {spec['mean']}, std {spec['std']}, zero-padded "
        f"bottom/right -> image_embeddings {'x'.join(map(str, spec['embedding']))}",
        f"Decoder      {models['decoder']}: image_embeddings, point_coords (1, N, 2) in a {frame}x{frame} frame (the image scaled by {frame}/its longest side), "
        f"point_labels (1, N) (1 fg, 0 bg, 2/3 box corners, -1 padding), mask_input (1, 1, {side}, {side}), has_mask_input (1,) "
        f"-> low_res_masks ({side}x{side} logits over the frame; > 0 is the mask) and iou_predictions",
    ]


def write_bundle(
    output: Path,
    artifact: Artifact,
    profile,
    *,
    inputs: np.ndarray,
    expected: Optional[np.ndarray],
    host_outputs: Optional[np.ndarray],
    sections: dict,
    reports: dict,
    sign_key: Optional[Path] = None,
    prompted: Optional[dict] = None,
    pipeline: Optional[dict] = None,
    eval_subset: Optional[tuple] = None,
) -> dict:
    """Write the bundle atomically; `sections` lands under manifest["bundle"], `reports` as JSON files.
    With `sign_key` the finished folder is signed (model.sig) before it is renamed into place.
    A promptable model's reference is `prompted` (prompts and PyTorch's masks: bundle_reference),
    not `expected`. `pipeline`: raw photos and PyTorch's final answers for them (pipeline.npz,
    api.pipeline_reference), for verify.py's whole-pipeline check; None where there are no photos.
    `eval_subset`: (eval.npz's arrays, its manifest section), labelled photos verify.py scores."""
    with staged_folder(output) as folder:
        models = artifact.manifest.get("models") or {}  # a promptable artifact's encoder and decoder
        for name in list(models.values()) if models else [artifact.model_file.name]:
            source = artifact.folder / name
            if source.is_dir():  # a Core ML .mlpackage, an OpenVINO IR folder
                shutil.copytree(source, folder / name)
            else:
                shutil.copy2(source, folder / name)
        from evitdeploy.backends import get_backend

        for name in get_backend(artifact.target).carried:  # artifact files a device or a rebuild may want
            if (artifact.folder / name).is_file():
                shutil.copy2(artifact.folder / name, folder / name)
        spec = artifact.spec
        arrays = {"inputs": inputs, **prompted} if prompted is not None else {"inputs": inputs, "expected": expected}
        if host_outputs is not None:  # absent where the making host cannot run the target (Core ML off macOS)
            arrays["host_outputs"] = host_outputs
        np.savez(folder / integrity.REFERENCE, **arrays)
        if pipeline is not None:
            np.savez(folder / pipeline_check.FILE, **pipeline)
        if eval_subset is not None:
            np.savez(folder / eval_subset_check.FILE, **eval_subset[0])
        if not spec.promptable:
            from evitdeploy.labels import class_names

            write_text(folder / LABELS, "".join(name.replace("\n", " ") + "\n" for name in class_names(spec)))
        write_device_code(folder, artifact.target)
        for name, report in reports.items():
            write_json(folder / name, report)
        inherited = {k: v for k, v in artifact.manifest.items() if k not in ("format", "created", "target", "precision", "model_file", "spec", "files")}
        bundle = {
            "profile": profile.to_dict(),
            "reference": {
                "file": integrity.REFERENCE,
                "images": int(len(inputs)),
                "inputs": list(inputs.shape),
                "expected": list(expected.shape if prompted is None else prompted["expected_masks"].shape),
                **({"prompts": int(len(prompted["prompt_images"]))} if prompted is not None else {}),
                "expected_from": "the PyTorch FP32 reference",
                "host_outputs_from": f"this {artifact.target} artifact on the making host" if host_outputs is not None else None,
            },
            "pipeline": _pipeline_section(pipeline, spec),
            **({"eval_subset": eval_subset[1]} if eval_subset is not None else {}),
            **sections,
        }
        draft = {
            "bundle": bundle,
            "spec": spec.to_dict(),
            "target": artifact.target,
            "precision": artifact.precision,
            "model_file": artifact.model_file.name,
            "toolchain": artifact.manifest.get("toolchain", {}),
            "export": artifact.manifest.get("export", {}),
            "models": artifact.manifest.get("models"),
            "int8_kernels": artifact.manifest.get("int8_kernels"),
        }
        write_text(folder / README, _readme(draft))
        manifest = build_manifest(folder, artifact.target, artifact.precision, spec=spec, model_file=artifact.model_file.name, **inherited, bundle=bundle)
        write_json(folder / MANIFEST, manifest)
        if sign_key is not None:
            from evitdeploy.signing import sign_bundle

            sign_bundle(folder, sign_key)
    return manifest


def _pipeline_section(pipeline: Optional[dict], spec) -> Optional[dict]:
    """What the whole-pipeline check holds, for the manifest and README (None: no raw photos)."""
    if pipeline is None:
        return None
    from evitdeploy.device.preprocessing import describe

    photos = [list(pipeline[key].shape[:2]) for key in sorted(k for k in pipeline if k.startswith("photo_"))]
    return {
        "file": pipeline_check.FILE,
        "photos": photos,
        **({"prompts": len(pipeline["mask_index"])} if "mask_index" in pipeline else {}),
        "preprocessing": describe(spec.preprocessing),
        "expected_from": "PyTorch FP32 through evitdeploy_device/pipeline.py",
    }


def write_device_code(folder: Path, target: str) -> None:
    """verify.py, evitdeploy/device/ as evitdeploy_device/, and the target's device module as its runtime.py."""
    from evitdeploy.backends import get_backend, module

    package = folder / DEVICE_PACKAGE
    package.mkdir()
    source = Path(device.__file__).parent
    for name in DEVICE_FILES:
        shutil.copyfile(source / name, package / name)
    shutil.copyfile(Path(module(get_backend(target), "device").__file__), package / DEVICE_RUNTIME)
    write_text(folder / VERIFY_SCRIPT, VERIFY_MAIN)


def _device_module(target: str):
    """The registry's device module for a manifest's target; None where there is none."""
    from evitdeploy.backends import find, module

    backend = find(target)
    if backend is None or backend.name != target:
        return None
    try:
        return module(backend, "device")
    except ModuleNotFoundError as exc:  # a backend without a device.py; any other missing module is a bug
        if exc.name != f"{backend.modules}.device":
            raise
        return None


def verify_bundle(
    folder: Path,
    threads: Optional[int] = None,
    warmup: Optional[int] = None,
    count: Optional[int] = None,
    public_key: Optional[Path] = None,
) -> dict:
    """`verify.py`'s verification run here (the device module from the registry, so a bundle of
    any layout verifies): the signature (with `public_key`), integrity, then parity and latency."""
    limits.check_timing(warmup, count, min_time_s=None, threads=threads, count_min=0)  # --count 0 skips latency
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"bundle not found: {folder}", "pass the folder `evitdeploy deploy` wrote")
    if public_key is not None:
        from evitdeploy.signing import require_model_signing

        require_model_signing()
    try:
        return verify(folder, _device_module, threads=threads, warmup=warmup, count=count, public_key=public_key, schema_check=_bundle_schema)
    except integrity.BundleError as exc:
        code = EXIT_BACKEND_UNAVAILABLE if exc.exit_code == 3 else 2
        raise UserError(exc.message, exc.hint, code) from exc


def _bundle_schema(path: Path) -> None:
    read_manifest(path, bundle=True)


def extra_bytes(manifest: dict) -> int:
    """Bytes the bundle adds beyond its model (the model's own size: artifact.model_size)."""
    models = list((manifest.get("models") or {}).values()) or [manifest["model_file"]]
    return sum(e["bytes"] for name, e in manifest["files"].items() if not any(name == m or name.startswith(m + "/") for m in models))
