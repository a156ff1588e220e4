"""`predict`: one image through an exported model, the prediction drawn onto the image as a PNG.

The model sees the largest centred region of the image with its input's aspect ratio (the centre
crop `data.preprocess` takes), resized and normalized by the spec. The picture shows that region
as it is and dims the rest; a segmenter's class map is mapped back onto that region only (no
letterbox: the model sees no padding it was not trained on).

One function per task in PREDICTORS, called as `predictor(image, spec=, run=, request=)` and
returning (result, picture); a task that takes prompts (--point/--box) is also in PROMPTED.
Library code: returns JSON-ready data, prints nothing.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from evitdeploy import api, limits, memory, rendering
from evitdeploy.files import IMAGE_MAX_BYTES, check_output, input_file, is_character_device, write_output
from evitdeploy.backends import runner_for, why_not_here
from evitdeploy.data import IMAGE_SUFFIXES, preprocess
from evitdeploy.errors import EXIT_BACKEND_UNAVAILABLE, EXIT_CHECK_FAILED, UserError
from evitdeploy.labels import class_names, palette
from evitdeploy.requests import PredictRequest
from evitdeploy.spec import CLASSIFICATION, PROMPTABLE, SEGMENTATION, ModelSpec
from evitdeploy.progress import Progress, report_step

TOP_MAX = 20  # --top: labels a classifier lists, classes a segmenter's legend shows
OVERLAY_ALPHA = 0.5
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in image pixels, x1 and y1 excluded
Run = Callable[[dict], dict]  # a feed in, the model's outputs out: the artifact's runner, timed


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


def model_view(image: np.ndarray, spec: ModelSpec) -> tuple[Box, np.ndarray]:
    """(the region of the image the model sees, the model's input): the whole photo through the
    spec's preprocessing (the reference's evaluation transform) at the artifact's input size,
    repeated to its batch."""
    model_input = preprocess([image], spec, spec.height, width=spec.width)
    return seen_region(image.shape[0], image.shape[1], spec), np.repeat(model_input, spec.input_shape[0], axis=0)


def model_output(run: Run, spec: ModelSpec, model_input: np.ndarray) -> np.ndarray:
    """The first image's output, checked against the shape the spec promises and for NaN/Inf."""
    outputs = run({spec.input_name: model_input})
    output = np.asarray(outputs.get(spec.output_name, next(iter(outputs.values()))), dtype=np.float32)
    expected = spec.output_shape(spec.input_shape[0], spec.height, spec.width)
    if output.shape != tuple(expected):
        raise UserError(f"the model's output has shape {output.shape}; its spec says {tuple(expected)}", "re-export the artifact")
    bad = int(np.size(output) - np.count_nonzero(np.isfinite(output)))
    if bad:
        raise UserError(f"the model's output holds {bad} NaN/Inf values", "run `evitdeploy check` on the artifact", EXIT_CHECK_FAILED)
    return output[0]


def _dim_unseen(image, region: Box):
    """Black at half strength over the part of the image the model did not see."""
    x0, y0, x1, y1 = region
    unseen = np.ones((image.height, image.width), dtype=bool)
    unseen[y0:y1, x0:x1] = False
    return rendering.overlay_mask(image, mask=unseen, color=rendering.BLACK, alpha=0.5) if unseen.any() else image


# ---- one function per task ----


def classify(image: np.ndarray, *, spec: ModelSpec, run: Run, request: PredictRequest):
    """The top-K classes by softmax probability, listed on a band over the picture."""
    region, model_input = model_view(image, spec)
    logits = model_output(run, spec, model_input).astype(np.float64)
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    names = class_names(spec)
    order = np.argsort(-probabilities, kind="stable")[: request.top]
    top = [{"rank": rank, "index": int(index), "label": names[index], "probability": float(probabilities[index])} for rank, index in enumerate(order, start=1)]
    drawn = _dim_unseen(rendering.picture(image), region)
    drawn = rendering.draw_text_band(drawn, [f"{entry['rank']}. {entry['label']}  {entry['probability']:.1%}" for entry in top])
    return {"region": list(region), "top": top}, drawn


def upsampled_argmax(logits: np.ndarray, size: tuple[int, int], chunk: int = 16) -> np.ndarray:
    """argmax over classes of (K, h, w) logits upsampled bilinearly to `size` (as the reference
    evaluates), `chunk` classes at a time: 150 full-size logit planes are never held at once."""
    import torch
    import torch.nn.functional as F

    best = best_class = None
    for start in range(0, len(logits), chunk):
        planes = torch.from_numpy(np.ascontiguousarray(logits[None, start : start + chunk]))
        value, index = F.interpolate(planes, size=size, mode="bilinear", align_corners=False)[0].max(dim=0)
        index += start
        if best is None:
            best, best_class = value, index
        else:  # strictly greater: a tie keeps the lower class, as argmax does
            better = value > best
            best, best_class = torch.where(better, value, best), torch.where(better, index, best_class)
    return best_class.numpy()


def nearest_resize(class_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A class map resized to (height, width) by nearest neighbour (pixel centres aligned)."""
    rows = np.minimum(((np.arange(size[0]) + 0.5) * class_map.shape[0] / size[0]).astype(np.int64), class_map.shape[0] - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * class_map.shape[1] / size[1]).astype(np.int64), class_map.shape[1] - 1)
    return class_map[rows[:, None], cols[None, :]]


def segment(image: np.ndarray, *, spec: ModelSpec, run: Run, request: PredictRequest):
    """The class map over the region the model saw, in the dataset's colours at alpha 0.5, with
    each class present and its share of that region's pixels (largest first).

    Logits are upsampled bilinearly to the model's input size and argmaxed there, then mapped to
    the region's pixels by nearest neighbour."""
    region, model_input = model_view(image, spec)
    x0, y0, x1, y1 = region
    classes = nearest_resize(upsampled_argmax(model_output(run, spec, model_input), (spec.height, spec.width)), (y1 - y0, x1 - x0))
    counts = np.bincount(classes.ravel(), minlength=spec.num_classes)
    names, colours = class_names(spec), palette(spec)
    present = [
        {"index": int(index), "name": names[index], "fraction": float(counts[index] / classes.size), "color": list(colours[index])}
        for index in np.argsort(-counts, kind="stable")
        if counts[index]
    ]
    class_map = np.full(image.shape[:2], -1, dtype=np.int32)
    class_map[y0:y1, x0:x1] = classes
    drawn = rendering.overlay_classes(rendering.picture(image), class_map=class_map, palette=colours, alpha=OVERLAY_ALPHA)
    legend = present[: request.top]
    drawn = rendering.draw_text_band(
        _dim_unseen(drawn, region),
        [f"{entry['name']}  {entry['fraction']:.1%}" for entry in legend],
        swatches=[tuple(e["color"]) for e in legend],
    )
    return {"region": list(region), "classes": present}, drawn


MASK_COLOUR = (30, 144, 255)


def segment_prompted(image: np.ndarray, *, spec: ModelSpec, run: Run, request: PredictRequest):
    """SAM: the whole image letterboxed into the encoder, the prompts (image pixels) mapped into
    its frame, the decoder's masks upscaled onto the image (SAM's postprocessing, device.prompts);
    the picture shows the mask with the highest predicted IoU, and the prompts."""
    from evitdeploy.device.prompts import MASK_THRESHOLD, decoder_feed, masks_for_image

    if not request.points and request.box is None:
        raise UserError(
            f"{spec.name} segments what a prompt points at, and none was given", "pass --point X,Y (repeatable; X,Y,0 for background) and/or --box X0,Y0,X1,Y1"
        )
    embedding = model_output(run, spec, np.repeat(preprocess([image], spec, spec.height, width=spec.width), spec.input_shape[0], axis=0))
    labels = list(request.point_labels) or [1] * len(request.points)
    prompt = {"points": list(request.points), "labels": labels, "box": request.box}
    outputs = run({"image_embeddings": embedding[None], **decoder_feed(prompt, image.shape[:2], frame=spec.prompt_frame, embedding=spec.embedding)})
    low_res, ious = np.asarray(outputs["low_res_masks"], np.float32)[0], np.asarray(outputs["iou_predictions"], np.float32)[0]
    if not (np.isfinite(low_res).all() and np.isfinite(ious).all()):
        raise UserError("the decoder's masks hold NaN/Inf values", "run `evitdeploy check` on the artifact", EXIT_CHECK_FAILED)
    masks = masks_for_image(low_res, image.shape[:2], spec.prompt_frame) > MASK_THRESHOLD
    best = int(np.argmax(ious))
    drawn = rendering.overlay_mask(rendering.picture(image), mask=masks[best], color=MASK_COLOUR, alpha=OVERLAY_ALPHA)
    if request.box is not None:
        drawn = rendering.draw_box(drawn, request.box)
    if request.points:
        drawn = rendering.draw_points(drawn, request.points, labels)
    result = {
        "prompt": {"points": [list(p) for p in request.points], "labels": labels, "box": list(request.box) if request.box else None},
        "masks": [{"index": i, "iou_prediction": float(ious[i]), "area_fraction": float(masks[i].mean())} for i in range(len(ious))],
        "shown": best,
    }
    return result, rendering.draw_text_band(drawn, [f"mask {best}: predicted IoU {ious[best]:.3f}, {masks[best].mean():.1%} of the image"])


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
    """Prompts only for a task that takes them; one label (0 or 1) per point; each point and the
    box inside the image (x in [0, width), y in [0, height))."""
    given = "--point" if request.points else "--box" if request.box is not None else None
    if given and task not in PROMPTED:
        raise UserError(f"{given} is for promptable (SAM) models", f"this artifact is a {task} model: drop {given}")
    if request.point_labels and len(request.point_labels) != len(request.points):
        raise UserError(f"{len(request.point_labels)} point labels for {len(request.points)} points", "give one label per point (or none: all foreground)")
    if any(label not in (0, 1) for label in request.point_labels):
        raise UserError(f"point labels {list(request.point_labels)} are not all 0 or 1", "1 marks foreground, 0 background")
    inside = f"inside the {width}x{height} image: 0 <= x < {width}, 0 <= y < {height} (pixels from the top-left corner)"
    for x, y in request.points:
        if not (0 <= x < width and 0 <= y < height):
            raise UserError(f"--point {x:g},{y:g} is outside the image", f"give a point {inside}")
    if request.box is not None:
        x0, y0, x1, y1 = request.box
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise UserError(f"--box {x0:g},{y0:g},{x1:g},{y1:g} is not a box inside the image", f"give X0,Y0,X1,Y1 with X0 < X1 and Y0 < Y1, {inside}")


# ---- the verb ----


def _check_output(output: Path, force: bool) -> None:
    check_output(output, "output PNG")  # no name of its own, a folder, a FIFO, /proc, a parent that is a file, write access
    if output.suffix.lower() != ".png" and not is_character_device(output):
        raise UserError(f"output {output} is not a .png file name", "the picture is a PNG: e.g. -o prediction.png")
    if output.is_file() and not force:
        raise UserError(f"output {output} already exists", "pass --force (force=True in Python) to replace it, or choose another -o")


class _TimedRun:
    """The runner's infer, timing each call: what a predictor's `run` is."""

    def __init__(self, runner):
        self.runner = runner
        self.latency_ms: list[float] = []

    def __call__(self, feed: dict) -> dict:
        started = time.perf_counter()
        outputs = self.runner.infer(feed)
        self.latency_ms.append((time.perf_counter() - started) * 1e3)
        return outputs


class _EncoderAndDecoder:
    """A promptable artifact's two runners behind one `infer`: a feed with an image embedding
    goes to the decoder, an image to the encoder."""

    def __init__(self, artifact, threads: Optional[int]):
        from evitdeploy.backends.promptable import artifact_models

        models = artifact_models(artifact)
        self.encoder, self.decoder = runner_for(models["encoder"], threads), runner_for(models["decoder"], threads)

    def __enter__(self):
        self.encoder.load()
        self.decoder.load()
        return self

    def __exit__(self, *exc) -> None:
        self.encoder.close()
        self.decoder.close()

    def check_spec(self, spec: ModelSpec) -> None:
        self.encoder.check_spec(spec)

    def infer(self, feed: dict) -> dict:
        return (self.decoder if "image_embeddings" in feed else self.encoder).infer(feed)


def _runner(artifact, threads: Optional[int]):
    return _EncoderAndDecoder(artifact, threads) if artifact.spec.promptable else runner_for(artifact, threads)


def predict(request: PredictRequest, progress: Progress = None) -> dict:
    """Run one image through the artifact, draw the prediction, write the PNG: the prediction as
    JSON-ready data. The latency is that of this one (cold) run, not a benchmark: see `bench`."""
    limits.check_range("--top", request.top, 1, high=TOP_MAX)
    limits.check_range("--threads", request.threads, 1, high=limits.THREADS_MAX)
    output, image_path = Path(request.output), Path(request.image)
    _check_output(output, request.force)
    report_step(progress, f"reading {image_path}")
    image = read_image(image_path)
    height, width = image.shape[:2]
    artifact = api.resolve_artifact(Path(request.path), request.model_name)  # the manifest's spec; --model only for a bare file
    spec = artifact.spec
    predictor = PREDICTORS.get(spec.task)
    if predictor is None:
        raise UserError(f"predict does not know {spec.task!r} models", f"it draws {', '.join(PREDICTORS)} models")
    check_prompts(request, task=spec.task, width=width, height=height)
    reason = why_not_here(artifact, "predict")
    if reason:
        raise UserError(reason, f"run predict where {artifact.target} runs, or export for another --target", EXIT_BACKEND_UNAVAILABLE)
    api.int8_kernels_here(artifact)  # an INT8 model whose sums this CPU would saturate is refused
    memory.require_fits(spec, "bench", f"predicting with {spec.name} at {spec.height}x{spec.width}")
    report_step(progress, f"running {artifact.model_file.name} on {artifact.target}")
    with _runner(artifact, request.threads) as runner:
        runner.check_spec(spec)
        run = _TimedRun(runner)
        result, drawn = predictor(image, spec=spec, run=run, request=request)
    report_step(progress, f"writing {output}")
    write_output(output, rendering.png_bytes(drawn), "output PNG")
    return {
        "kind": "prediction",
        "artifact": str(artifact.folder),
        "model": spec.name,
        "task": spec.task,
        "target": artifact.target,
        "precision": artifact.precision,
        "input_shape": list(spec.input_shape),
        "image": {"path": str(image_path), "width": width, "height": height},
        "result": result,
        "output": str(output),
        "latency_ms": round(sum(run.latency_ms), 3),
    }
