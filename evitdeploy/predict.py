"""`predict`: one image through an exported model, the prediction drawn onto the image as a PNG.

The answer is device.pipeline's, run on the host's runners: the reference's preprocessing of the
whole photo, the model, the task's postprocessing at the photo's size, exactly what an app gets
from a bundle (`evitdeploy_device.load(bundle).predict(photo)`). The picture dims what the model
did not see (a classifier's center crop); a segmenter's class map covers the photo; a promptable
model's mask is the one SAM's conventions show for the prompt.

One function per task in PREDICTORS, called as `predictor(image, answer, spec=, request=)` and
returning (result, picture); a task that takes prompts (--point/--box) is also in PROMPTED.
Library code: returns JSON-ready data, prints nothing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np

from evitdeploy import api, limits, memory, rendering
from evitdeploy.files import IMAGE_MAX_BYTES, check_output, input_file, is_character_device, write_output
from evitdeploy.backends import why_not_here
from evitdeploy.data import IMAGE_SUFFIXES
from evitdeploy.errors import EXIT_BACKEND_UNAVAILABLE, EXIT_CHECK_FAILED, UserError
from evitdeploy.labels import class_names, palette
from evitdeploy.requests import PredictRequest
from evitdeploy.spec import CLASSIFICATION, PROMPTABLE, SEGMENTATION, ModelSpec
from evitdeploy.progress import Progress, report_step

TOP_MAX = 20  # --top: labels a classifier lists, classes a segmenter's legend shows
OVERLAY_ALPHA = 0.5
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in image pixels, x1 and y1 excluded


# ---- the image and what the model sees of it ----


def read_image(path: Path) -> np.ndarray:
    """The image as HWC uint8 RGB, read as `--data` folders' images are (data.read_photo)."""
    from evitdeploy.data import read_photo

    if path.is_dir():
        raise UserError(f"{path} is a folder, not an image", "pass one image file: predict runs one image")
    input_file(path, "image", "pass the path of a photo (.png, .jpg, ...)", limit=IMAGE_MAX_BYTES)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise UserError(f"{path} is not an image file (suffix {path.suffix or 'none'!r})", f"pass a {', '.join(sorted(IMAGE_SUFFIXES))} file")
    return read_photo(path, "pass a photo file that opens in an image viewer")


def seen_region(height: int, width: int, spec: ModelSpec) -> Box:
    """The part of a height x width photo the model sees through its preprocessing (a classifier:
    the center crop's footprint; a segmenter: the whole photo, resized to the input)."""
    from evitdeploy.device.preprocess import seen_box

    return seen_box((height, width), spec.preprocessing, (spec.height, spec.width))


def _dim_unseen(image, region: Box):
    """Black at half strength over the part of the image the model did not see."""
    x0, y0, x1, y1 = region
    unseen = np.ones((image.height, image.width), dtype=bool)
    unseen[y0:y1, x0:x1] = False
    return rendering.overlay_mask(image, mask=unseen, color=rendering.BLACK, alpha=0.5) if unseen.any() else image


# ---- one function per task: the pipeline's answer (device.pipeline) in JSON and drawn ----


def classify(image: np.ndarray, answer: dict, *, spec: ModelSpec, request: PredictRequest):
    """The top-K classes by softmax probability, listed on a band over the picture."""
    region = seen_region(image.shape[0], image.shape[1], spec)
    top = answer["top"]
    drawn = _dim_unseen(rendering.picture(image), region)
    drawn = rendering.draw_text_band(drawn, [f"{entry['rank']}. {entry['label']}  {entry['probability']:.1%}" for entry in top])
    return {"region": list(region), "top": top}, drawn


def segment(image: np.ndarray, answer: dict, *, spec: ModelSpec, request: PredictRequest):
    """The class map at the photo's size in the dataset's colours at alpha 0.5, with each class
    present and its share of the pixels the model saw (largest first)."""
    region = seen_region(image.shape[0], image.shape[1], spec)
    class_map = answer["class_map"]
    seen = class_map[class_map >= 0]
    counts = np.bincount(seen, minlength=spec.num_classes)
    names, colours = class_names(spec), palette(spec)
    present = [
        {"index": int(index), "name": names[index], "fraction": float(counts[index] / seen.size), "color": list(colours[index])}
        for index in np.argsort(-counts, kind="stable")
        if counts[index]
    ]
    drawn = rendering.overlay_classes(rendering.picture(image), class_map=class_map, palette=colours, alpha=OVERLAY_ALPHA)
    legend = present[: request.top]
    drawn = rendering.draw_text_band(
        _dim_unseen(drawn, region),
        [f"{entry['name']}  {entry['fraction']:.1%}" for entry in legend],
        swatches=[tuple(e["color"]) for e in legend],
    )
    return {"region": list(region), "classes": present}, drawn


MASK_COLOURS = ((30, 144, 255), (255, 160, 30), (60, 200, 90))  # one per mask --multimask shows


def segment_prompted(image: np.ndarray, answer: dict, *, spec: ModelSpec, request: PredictRequest):
    """SAM: the mask(s) SAM's conventions show for the prompt (a box or several points: the
    single-mask output; one point: the best of the three multimask outputs; --multimask: all
    three), each with its predicted IoU, area and box; drawn with the prompts."""
    from evitdeploy.device.pipeline import mask_summary

    drawn = rendering.picture(image)
    for colour, shown in zip(MASK_COLOURS, answer["masks"]):
        drawn = rendering.overlay_mask(drawn, mask=shown["mask"], color=colour, alpha=OVERLAY_ALPHA)
    if request.box is not None:
        drawn = rendering.draw_box(drawn, request.box)
    labels = list(request.point_labels) or [1] * len(request.points)
    if request.points:
        drawn = rendering.draw_points(drawn, request.points, labels)
    masks = [{"index": m["index"], "score": m["score"], **mask_summary(m["mask"])} for m in answer["masks"]]
    result = {
        "prompt": {"points": [list(p) for p in request.points], "labels": labels, "box": list(request.box) if request.box else None},
        "masks": masks,
        "shown_by": _convention(request),
        "iou_predictions": [float(v) for v in answer["iou_predictions"]],
    }
    lines = [f"mask {m['index']}: predicted IoU {m['score']:.3f}, {m['area_fraction']:.1%} of the image" for m in masks]
    return result, rendering.draw_text_band(drawn, lines)


def _convention(request: PredictRequest) -> str:
    from evitdeploy.device.prompts import ambiguous

    if request.multimask:
        return "--multimask: SAM's three multimask outputs"
    labels = (list(request.point_labels) or [1] * len(request.points)) + ([2, 3] if request.box is not None else [])
    if ambiguous(labels):
        return "one point: the multimask output with the highest predicted IoU (SamPredictor's advice)"
    return "a box or several points: SAM's single-mask output"


PREDICTORS: dict[str, Callable] = {CLASSIFICATION: classify, SEGMENTATION: segment, PROMPTABLE: segment_prompted}
PROMPTED: frozenset[str] = frozenset({PROMPTABLE})  # the tasks that take --point / --box


# ---- prompts ----


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise UserError(f"{what} holds {text.strip()!r}, which is not a number", "coordinates are pixel numbers, e.g. --point 120,80")
    return value


def parse_point(text: str) -> tuple[tuple[float, float], int]:
    """'X,Y' or 'X,Y,LABEL' -> ((x, y), label); LABEL is 1 (foreground, the default) or 0 (background)."""
    parts = text.split(",")
    if len(parts) not in (2, 3):
        raise UserError(f"--point {text!r} is not X,Y", "e.g. --point 120,80 (pixels from the top-left corner), or 120,80,0 for a background point")
    label = parts[2].strip() if len(parts) == 3 else "1"
    if label not in ("0", "1"):
        raise UserError(f"--point {text!r} has label {label!r}", "the label is 1 (foreground) or 0 (background)")
    return (_number(parts[0], f"--point {text!r}"), _number(parts[1], f"--point {text!r}")), int(label)


def parse_box(text: str) -> tuple[float, float, float, float]:
    """'X0,Y0,X1,Y1' -> the box's corners, top-left first."""
    parts = text.split(",")
    if len(parts) != 4:
        raise UserError(f"--box {text!r} is not X0,Y0,X1,Y1", "e.g. --box 10,20,200,180 (pixels: top-left, then bottom-right corner)")
    x0, y0, x1, y1 = (_number(part, f"--box {text!r}") for part in parts)
    return x0, y0, x1, y1


def check_prompts(request: PredictRequest, *, task: str, width: int, height: int) -> None:
    """Prompts only for a task that takes them, and one that fits the photo (device.prompts.prompt_problem)."""
    from evitdeploy.device.prompts import prompt_problem

    given = "--point" if request.points else "--box" if request.box is not None else "--multimask" if request.multimask else None
    if task not in PROMPTED:
        if given:
            raise UserError(f"{given} is for promptable (SAM) models", f"this artifact is a {task} model: drop {given}")
        return
    labels = list(request.point_labels) or [1] * len(request.points)
    problem = prompt_problem({"points": list(request.points), "labels": labels, "box": request.box}, (height, width))
    if problem:
        inside = f"inside the {width}x{height} image: 0 <= x < {width}, 0 <= y < {height} (pixels from the top-left corner)"
        raise UserError(problem, f"pass --point X,Y (repeatable; X,Y,0 for background) and/or --box X0,Y0,X1,Y1, {inside}")


# ---- the verb ----


def _check_output(output: Path, force: bool, what: str = "output PNG", *, suffixes: tuple = (".png",)) -> None:
    check_output(output, what)  # no name of its own, a folder, a FIFO, /proc, a parent that is a file, write access
    if output.suffix.lower() not in suffixes and not is_character_device(output):
        raise UserError(f"{what} {output} is not a {' or '.join(suffixes)} file name", f"e.g. -o prediction{suffixes[0]}")
    if output.is_file() and not force:
        raise UserError(f"{what} {output} already exists", "pass --force (force=True in Python) to replace it, or choose another path")


def _answer(model, image: np.ndarray, request: PredictRequest) -> dict:
    """device.pipeline.predict on the host's runners: what a bundle's app gets for this photo."""
    from evitdeploy.device.pipeline import NonFiniteOutput, predict as pipeline_predict

    spec = model.spec
    prompt = None
    if spec.promptable:
        prompt = {"points": list(request.points), "labels": list(request.point_labels) or [1] * len(request.points), "box": request.box}
    try:
        return pipeline_predict(
            image, spec.to_dict(), model.encode, decode=model.decode, prompt=prompt, multimask=request.multimask, top=request.top, names=class_names(spec)
        )
    except NonFiniteOutput as exc:
        raise UserError(str(exc), "run `evitdeploy check` on the artifact", EXIT_CHECK_FAILED) from None


def predict(request: PredictRequest, progress: Progress = None) -> dict:
    """Run one image through the artifact, draw the prediction, write the PNG (and, for a promptable
    model, --save-mask): the prediction as JSON-ready data. The latency is that of this one (cold)
    run, not a benchmark: see `bench`."""
    limits.check_range("--top", request.top, 1, high=TOP_MAX)
    limits.check_range("--threads", request.threads, 1, high=limits.THREADS_MAX)
    output, image_path = Path(request.output), Path(request.image)
    _check_output(output, request.force)
    if request.save_mask is not None:
        _check_output(Path(request.save_mask), request.force, "--save-mask file", suffixes=MASK_SUFFIXES)
    report_step(progress, f"reading {image_path}")
    image = read_image(image_path)
    height, width = image.shape[:2]
    artifact = api.resolve_artifact(Path(request.path), request.model_name)  # the manifest's spec; --model only for a bare file
    spec = artifact.spec
    predictor = PREDICTORS.get(spec.task)
    if predictor is None:
        raise UserError(f"predict does not know {spec.task!r} models", f"it draws {', '.join(PREDICTORS)} models")
    check_prompts(request, task=spec.task, width=width, height=height)
    if request.save_mask is not None and spec.task not in PROMPTED:
        raise UserError("--save-mask is for promptable (SAM) models", f"this artifact is a {spec.task} model: drop --save-mask")
    reason = why_not_here(artifact, "predict")
    if reason:
        raise UserError(reason, f"run predict where {artifact.target} runs, or export for another --target", EXIT_BACKEND_UNAVAILABLE)
    api.int8_kernels_here(artifact)  # an INT8 model whose sums this CPU would saturate is refused
    memory.require_fits(spec, "bench", f"predicting with {spec.name} at {spec.height}x{spec.width}")
    report_step(progress, f"running {artifact.model_file.name} on {artifact.target}")
    from evitdeploy.artifact_model import ArtifactModel

    with ArtifactModel(artifact, request.threads) as model:
        answer = _answer(model, image, request)
    result, drawn = predictor(image, answer, spec=spec, request=request)
    report_step(progress, f"writing {output}")
    write_output(output, rendering.png_bytes(drawn), "output PNG")
    if request.save_mask is not None:
        write_output(Path(request.save_mask), mask_bytes(answer["masks"], Path(request.save_mask)), "--save-mask file")
        result["mask_file"] = str(request.save_mask)
    return {
        "kind": "prediction",
        **api.artifact_header(artifact, spec),
        "image": {"path": str(image_path), "width": width, "height": height},
        "result": result,
        "output": str(output),
        "latency_ms": round(sum(model.latency_ms), 3),
    }


MASK_SUFFIXES = (".png", ".npy")


def mask_bytes(shown: list, path: Path) -> bytes:
    """--save-mask's file: .npy, every mask shown (M, H, W) bool in the order listed; otherwise a
    PNG of the highest-scored one (the only one without --multimask), 8-bit grayscale, 255 inside."""
    import io

    from PIL import Image

    if path.suffix.lower() == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, np.stack([m["mask"] for m in shown]), allow_pickle=False)
        return buffer.getvalue()
    best = max(shown, key=lambda m: m["score"])
    return rendering.png_bytes(Image.fromarray(best["mask"].astype(np.uint8) * 255, mode="L"))
