"""The `evitdeploy` command: a thin Typer layer over `evitdeploy.api`.

This module alone prints and picks exit codes: 0 ok, 1 check failed, 2 usage or input error,
3 backend unavailable. Heavy backends are imported inside the verbs, never at start-up.
"""

from __future__ import annotations

import functools
import json
import shlex
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from evitdeploy import __version__, limits
from evitdeploy.backends import BACKENDS, check_grid_options, option_help, options_help, parse_option_flags
from evitdeploy.errors import EXIT_CHECK_FAILED, UserError, one_line


def _click_exceptions():
    """The click exceptions module Typer parses with (its own vendored copy since Typer 0.22, click before)."""
    import importlib

    return importlib.import_module(typer.BadParameter.__module__)


def _render_error(message: str, hint: str, *, exit_code: int, as_json: bool) -> None:
    """The one way a refused command ends: one `error: message — hint` line on stderr and, under
    --json, `{"error", "hint", "exit_code"}` on stdout."""
    if as_json:
        print(json.dumps({"error": message, "hint": hint, "exit_code": exit_code}, indent=2))
    text = "error: " + one_line(message) + (f" — {one_line(hint)}" if hint else "")
    err.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True)


def _usage_message(exc) -> str:
    """Click's message ("No such option: --bogus.") in our style ("no such option: --bogus")."""
    text = exc.format_message().strip().rstrip(".")
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        text = text[0].lower() + text[1:]
    return text or type(exc).__name__


def _help_hint(ctx, argv: list[str], commands) -> str:
    if ctx is None:  # click raises some parse errors (an option without its value) without a context
        verb = next((a for a in argv if not a.startswith("-")), None)
        return f"see evitdeploy {verb} --help" if verb in commands else "see evitdeploy --help"
    names = []
    while ctx is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    path = " ".join(["evitdeploy", *[n for n in reversed(names[:-1]) if n]])
    return f"see {path} --help"


class _Group(typer.core.TyperGroup):
    """Typer's group, with usage errors (unknown option, bad value, missing argument, no such
    command) rendered like every other refusal: one `error:` line, exit 2, JSON too under --json.

    Overriding `main` covers both the console script (`run`) and `CliRunner().invoke(app, ...)`.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        argv = list(sys.argv[1:] if args is None else args)
        as_json = "--json" in (argv[: argv.index("--")] if "--" in argv else argv)  # after `--` it is an argument
        exceptions = _click_exceptions()
        try:
            rv = super().main(args=argv, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
        except exceptions.ClickException as exc:
            code = 2
            if isinstance(exc, getattr(exceptions, "NoArgsIsHelpError", ())):
                # the help has been printed already (on stdout); say what is missing
                _render_error("missing command", "choose one of the commands above", exit_code=code, as_json=as_json)
            else:
                _render_error(_usage_message(exc), _help_hint(getattr(exc, "ctx", None), argv, self.commands), exit_code=code, as_json=as_json)
        except (typer.Abort, getattr(exceptions, "Abort", typer.Abort)):
            code = 130
            err.print("interrupted", markup=False)
        except (typer.Exit, getattr(exceptions, "Exit", typer.Exit)) as exc:
            code = exc.exit_code
        if not standalone_mode:
            return code
        sys.exit(code)


app = typer.Typer(
    help="Export EfficientViT models to deployment targets and prove they are still right and fast. Targets: "
    + ", ".join(backend.name for backend in BACKENDS.values())
    + " (`evitdeploy doctor` says which are installed).",
    cls=_Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text as written: "[default: ...]" and "evitdeploy[farm]" are not Rich markup
)
# Piped output (CI logs, make demo) gets a wide table instead of rich's 80-column default.
out = Console() if sys.stdout.isatty() else Console(width=160)
err = Console(stderr=True)

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON on stdout instead of tables.")


MODEL_OPTION = typer.Option(..., "--model", "-m", help="Registered model name (see `evitdeploy models`).")
SEED_OPTION = typer.Option(0, "--seed", min=0, max=limits.SEED_MAX, help="Seed of the random init when no checkpoint is given.")
_TARGETS_HELP = ", ".join(b.name + (f" (the {b.extra} extra)" if b.extra else "") for b in BACKENDS.values())  # from the registry
CALIB_OPTION = typer.Option(
    None,
    "--calib",
    help="Calibration data for fp16/int8: image folder, .npz, 'samples' (scikit-image photos + crops) [default], or 'synthetic' (noise, only if you must).",
)
CALIB_COUNT_OPTION = typer.Option(
    None, "--calib-count", max=limits.CALIB_COUNT_MAX, help="Calibration images; crops and flips extend a small set [default: 64, or 16 above a megapixel]."
)
CALIB_METHOD_OPTION = typer.Option("minmax", "--calib-method", help="Activation range for Q/DQ scales: minmax, percentile (99.99% of |x|) or entropy (KL).")
FP16_IO_OPTION = typer.Option(False, "--fp16-io", help="FP16 model inputs/outputs [default: float32 I/O around an FP16 body].")
FP16_MARGIN_OPTION = typer.Option(4.0, "--fp16-margin", help="Safety factor on measured |max|: tensors above 65504/margin stay FP32.")
MIN_COSINE_OPTION = typer.Option(
    0.99, "--min-cosine-target", help="INT8 plan target: per-image cosine to FP32 on held-out images; the search moves blocks to FP32 until met."
)
INT8_KERNELS_OPTION = typer.Option(
    None,
    "--int8-kernels",
    help="x86 CPUs the INT8 model is for (onnx, openvino): any (7-bit weights, exact on every x86), vnni (full 8-bit weights, "
    "VNNI/AMX CPUs only: AVX2-only CPUs saturate them and check refuses it there) or avx2 [default: the profile's, else any].",
)
OPTION_OPTION = typer.Option(
    None,
    "--option",
    "-O",
    metavar="NAME=VALUE",
    help=f"An option the target declares, NAME=VALUE (repeatable); the targets' options: {options_help()}.",
)
SEARCH_BUDGET_OPTION = typer.Option(
    6, "--search-budget", max=limits.SEARCH_BUDGET_MAX, help="At most this many blocks the INT8 search may move to FP32 (0: rules only)."
)


DATASET_OPTION = typer.Option(
    None,
    "--dataset",
    help="Labelled data (an ImageFolder; images/ + masks/, Cityscapes or ADE20K; COCO-style JSON) each artifact is evaluated on after its "
    "bench, beside PyTorch FP32, on the host that benched it: see `evitdeploy eval`.",
)
DATASET_LIMIT_OPTION = typer.Option(None, "--dataset-limit", min=1, help="With --dataset: evaluate this many of its images, drawn with --seed [default: all].")
INT8_PLAN_OPTION = typer.Option(
    "searched",
    "--int8-plan",
    help="searched: the precision plan (rules, then the sensitivity search); naive: the target's stock quantizer with its defaults "
    "(onnx: onnxruntime quantize_static; openvino: nncf.quantize), no plan, a baseline to measure what the plan buys on your data: "
    "its parity is recorded, not enforced.",
)


SEARCH_DATASET_OPTION = typer.Option(
    None,
    "--dataset",
    help="Labelled data (see `evitdeploy eval`) the INT8 search judges candidates on, with --max-drop: blocks move to FP32 until "
    "top-1 / mIoU is within --max-drop points of FP32's, instead of the cosine target.",
)
SEARCH_MAX_DROP_OPTION = typer.Option(
    None, "--max-drop", help="With --dataset: the INT8 search's target, in points of top-1 / mIoU below the FP32 model on its photos."
)
SEARCH_LIMIT_OPTION = typer.Option(
    None, "--dataset-limit", min=1, help="With --dataset: photos the search scores each candidate on [default: 200, 16 above a megapixel]."
)


def _precision_options(
    *,
    calib,
    calib_count,
    calib_method,
    fp16_io=False,
    fp16_margin,
    min_cosine,
    search_budget,
    explain=False,
    int8_kernels=None,
    int8_plan="searched",
    dataset=None,
    dataset_limit=None,
    max_drop=None,
):
    from evitdeploy.precision.options import PrecisionOptions

    return PrecisionOptions(
        calib=str(calib) if calib is not None else None,
        calib_count=calib_count,
        method=calib_method,
        fp16_io=fp16_io,
        fp16_margin=fp16_margin,
        min_cosine=min_cosine,
        search_budget=search_budget,
        explain=explain,
        int8_kernels=int8_kernels,
        int8_plan=int8_plan,
        dataset=str(dataset) if dataset is not None else None,
        dataset_limit=dataset_limit,
        max_drop=max_drop,
    )


def _dataset_folder(dataset: Optional[Path], limit: Optional[int]) -> Optional[str]:
    """--dataset as the cells carry it, refused at the door when it is not a folder (its layout is
    checked per model, as each cell's eval opens it)."""
    if dataset is None:
        if limit is not None:
            raise UserError("--dataset-limit is for --dataset", "add --dataset PATH, or drop --dataset-limit")
        return None
    if not dataset.is_dir():
        raise UserError(f"dataset {dataset} is not a folder", "pass the labelled data's folder (see `evitdeploy eval --help`)")
    return str(dataset.resolve())


def _grid_checkpoint(checkpoint: Optional[Path], models: list[str]) -> Optional[str]:
    """--checkpoint for a sweep: one model's weights, checked to load before any cell runs."""
    if checkpoint is None:
        return None
    if len(models) != 1:
        raise UserError(f"--checkpoint holds one model's weights; the grid has {len(models)} models", "sweep one model with its checkpoint")
    from evitdeploy.models import build_model, get_spec

    build_model(get_spec(models[0]), checkpoint)  # weights that do not load are refused here, not in every cell
    return str(checkpoint.resolve())


def _int8_plan(value: str) -> str:
    from evitdeploy.precision.options import INT8_PLANS

    if value not in INT8_PLANS:
        raise UserError(f"--int8-plan {value!r} is not a plan", f"choose one of: {', '.join(INT8_PLANS)}")
    return value


def _version_callback(value: bool) -> None:
    if value:
        print(f"evitdeploy {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Show the version and exit."),
) -> None:
    """evitdeploy: EfficientViT from PyTorch to its deployment targets, with proof."""


def handles_errors(command):
    """Render UserError as one line on stderr with its exit code; no traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            for name, flag in (("save", "--save"), ("markdown_file", "--markdown")):
                if kwargs.get(name) is not None:  # refused before the work, not after it
                    from evitdeploy.files import check_output

                    check_output(kwargs[name], f"{flag} file")
            return command(*args, **kwargs)
        except UserError as exc:
            _render_error(exc.message, exc.hint, exit_code=exc.exit_code, as_json=bool(kwargs.get("as_json")))
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:  # a path the filesystem refuses wherever it is first touched (too long, a loop, no access, disk full)
            what = f"{exc.filename}: " if exc.filename else ""
            _render_error(f"{what}{exc.strerror or exc}", "check the path and that there is room to write", exit_code=2, as_json=bool(kwargs.get("as_json")))
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted", markup=False)
            raise typer.Exit(130) from None

    return wrapper


@contextmanager
def progress(enabled: bool):
    """A spinner on stderr naming the current step (quiet under --json or without a terminal)."""
    if not enabled or not err.is_terminal:
        yield (lambda step: err.print(f"… {one_line(step)}", markup=False, highlight=False, emoji=False)) if enabled else None
        return
    from rich.text import Text

    with err.status("starting") as status:
        yield lambda step: status.update(Text(one_line(step)))  # a plain Text: paths are no markup


def _say(text: str) -> None:
    """A plain line on stdout: whatever paths or names it holds are not taken for Rich markup."""
    out.print(text, markup=False, emoji=False)


def _emit(data: dict | list, as_json: bool, table_factory) -> None:
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        out.print(table_factory(data))


def _save(data: dict, path: Optional[Path]) -> None:
    if path is not None:
        _write_text(path, json.dumps(data, indent=2) + "\n")


def _write_text(path: Path, text: str) -> None:
    """An output file the user named (see files.write_output: /dev/null is written into, not replaced)."""
    from evitdeploy.files import write_output

    write_output(path, text.encode(), "output")


PREPROCESSING_OPTION = typer.Option(
    None,
    "--preprocessing",
    metavar="FILE.json",
    help="How your model's photos were preprocessed when it was trained and evaluated, if not the reference's: a JSON of the settings "
    "(resize, interpolation, library, crop_ratio, rounding, mean, std) or a timm checkpoint's config.json. Recorded in the manifest; "
    "check, predict and the bundle use it [default: the reference's eval transform for the task].",
)


@app.command()
@handles_errors
def models(as_json: bool = JSON_OPTION) -> None:
    """List the registered EfficientViT models."""
    from evitdeploy.api import list_models
    from evitdeploy.report.tables import models_table

    _emit(list_models(), as_json, models_table)


@app.command()
@handles_errors
def export(
    model: str = MODEL_OPTION,
    target: str = typer.Option("onnx", "--target", "-t", help=f"Deployment target: {_TARGETS_HELP}."),
    precision: str = typer.Option(
        "fp32",
        "--precision",
        "-p",
        help="Numeric precision: fp32, fp16 (FP32 islands from measured ranges), bf16 (on CPUs that have it; see each target's precisions) or int8 (following the precision plan).",
    ),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Artifact folder [default: MODEL-TARGET-PRECISION]."),
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", "-c", help="Local .pt/.pth/.safetensors weights (reference or timm layout); random init if omitted."
    ),
    batch: Optional[int] = typer.Option(None, "--batch", help="Batch size of the exported input [default: 1]."),
    height: Optional[int] = typer.Option(None, "--height", help="Input height, a multiple of 32 [default: the model's]."),
    width: Optional[int] = typer.Option(None, "--width", help="Input width, a multiple of 32 [default: the model's]."),
    dynamic: str = typer.Option("", "--dynamic", help="Dynamic axes: comma list of batch,height,width, or 'all'."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset, 17-20 [default: 17 for B models; 20 for L models, whose GELU is one op there]."),
    simplify: bool = typer.Option(True, "--simplify/--no-simplify", help="Simplify the graph with onnxslim."),
    option: Optional[list[str]] = OPTION_OPTION,
    nhwc: bool = typer.Option(False, "--nhwc", help=f"Short for --option nhwc=true ({option_help('nhwc')})."),
    delegate: str = typer.Option("", "--delegate", help=f"Short for --option delegate=NAME ({option_help('delegate')}) [default: the first]."),
    data: Optional[Path] = typer.Option(None, "--data", help="Image folder or .npz for validation [default: scikit-image sample photos]."),
    preprocessing: Optional[Path] = PREPROCESSING_OPTION,
    seed: int = SEED_OPTION,
    attention_eps: Optional[float] = typer.Option(None, "--attention-eps", help="Override LiteMLA's normalizer eps (default: the checkpoint's)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
    calib: Optional[str] = CALIB_OPTION,
    calib_count: Optional[int] = CALIB_COUNT_OPTION,
    calib_method: str = CALIB_METHOD_OPTION,
    fp16_io: bool = FP16_IO_OPTION,
    fp16_margin: float = FP16_MARGIN_OPTION,
    min_cosine_target: float = MIN_COSINE_OPTION,
    search_budget: int = SEARCH_BUDGET_OPTION,
    int8_kernels: Optional[str] = INT8_KERNELS_OPTION,
    int8_plan: str = INT8_PLAN_OPTION,
    dataset: Optional[Path] = SEARCH_DATASET_OPTION,
    dataset_limit: Optional[int] = SEARCH_LIMIT_OPTION,
    max_drop: Optional[float] = SEARCH_MAX_DROP_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Export a model, validate it against PyTorch on real photos, and write the artifact folder.

    fp16/int8 first calibrate (ranges of every tensor), make a precision plan (which nodes stay
    FP32 and why) and, for int8, search for the blocks to keep in FP32; the plan (precision_plan.json)
    and ranges (ranges.json) travel with the artifact.
    """
    from evitdeploy.api import export_model, parse_dynamic
    from evitdeploy.requests import ExportRequest

    reduced = _precision_options(
        calib=calib,
        calib_count=calib_count,
        calib_method=calib_method,
        fp16_io=fp16_io,
        fp16_margin=fp16_margin,
        min_cosine=min_cosine_target,
        search_budget=search_budget,
        int8_kernels=int8_kernels,
        int8_plan=int8_plan,
        dataset=dataset,
        dataset_limit=dataset_limit,
        max_drop=max_drop,
    )
    request = ExportRequest(
        model=model,
        target=target,
        precision=precision,
        output=output,
        checkpoint=checkpoint,
        batch=batch,
        height=height,
        width=width,
        dynamic=parse_dynamic(dynamic),
        opset=opset,
        simplify=simplify,
        force=force,
        seed=seed,
        attention_eps=attention_eps,
        data=data,
        preprocessing=preprocessing,
        reduced=reduced,
        backend_options=parse_option_flags(option, nhwc=nhwc, delegate=delegate),
    )
    with progress(not as_json) as step:
        artifact = export_model(request, progress=step)
    if as_json:
        print(json.dumps({"artifact": str(artifact.folder), "model_file": str(artifact.model_file), **artifact.manifest}, indent=2))
        return
    from evitdeploy.report.tables import export_headline, export_lines

    out.print(export_headline(artifact))
    for line in export_lines(artifact.manifest):
        _say(line)


@app.command()
@handles_errors
def plan(
    model: str = typer.Argument(..., help="Registered model name (see `evitdeploy models`)."),
    precision: str = typer.Option("int8", "--precision", "-p", help="fp16, bf16 or int8."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Local weights (trained weights give meaningful ranges; random init does not)."),
    height: Optional[int] = typer.Option(None, "--height", help="Input height the plan is made for [default: the model's]."),
    width: Optional[int] = typer.Option(None, "--width", help="Input width [default: the model's]."),
    seed: int = SEED_OPTION,
    attention_eps: Optional[float] = typer.Option(None, "--attention-eps", help="Override LiteMLA's normalizer eps."),
    calib: Optional[str] = CALIB_OPTION,
    calib_count: Optional[int] = CALIB_COUNT_OPTION,
    calib_method: str = CALIB_METHOD_OPTION,
    fp16_margin: float = FP16_MARGIN_OPTION,
    min_cosine_target: float = MIN_COSINE_OPTION,
    search_budget: int = SEARCH_BUDGET_OPTION,
    int8_kernels: Optional[str] = INT8_KERNELS_OPTION,
    dataset: Optional[Path] = SEARCH_DATASET_OPTION,
    dataset_limit: Optional[int] = SEARCH_LIMIT_OPTION,
    max_drop: Optional[float] = SEARCH_MAX_DROP_OPTION,
    explain: bool = typer.Option(False, "--explain", help="Rank every block by the error it causes alone (INT8), even when the rules already meet the target."),
    torch_fp16: Optional[str] = typer.Option(
        None,
        "--torch-fp16",
        metavar="DEVICE",
        help="FP16 plans: also run plain FP16 and the plan's FP16 in PyTorch on DEVICE (cuda, cuda:N or cpu) against FP32: "
        "the plan's numerics on that GPU's FP16 kernels, no TensorRT needed.",
    ),
    save: Optional[Path] = typer.Option(None, "--save", help="Also write the plan JSON (with the ranges) to this file."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Make the precision plan an fp16/int8 export would follow and say why for every block.

    Shows per block how many nodes run in each precision and the reasons for FP32 (measured range,
    rule, sensitivity); with --explain the INT8 sensitivity ranking (each block quantized alone,
    cosine to FP32 on held-out images) and the greedy search's steps. With --torch-fp16 cuda,
    plain FP16 against the plan on the GPU, e.g. at Cityscapes size:
    `evitdeploy plan efficientvit_seg_b1_cityscapes -p fp16 -c seg_b1.pt --calib city/ --torch-fp16 cuda`.
    """
    from evitdeploy.api import plan_model
    from evitdeploy.report.tables import plan_table
    from evitdeploy.requests import PlanRequest

    reduced = _precision_options(
        calib=calib,
        calib_count=calib_count,
        calib_method=calib_method,
        fp16_margin=fp16_margin,
        min_cosine=min_cosine_target,
        search_budget=search_budget,
        explain=explain,
        int8_kernels=int8_kernels,
        dataset=dataset,
        dataset_limit=dataset_limit,
        max_drop=max_drop,
    )
    request = PlanRequest(
        model=model,
        precision=precision,
        checkpoint=checkpoint,
        height=height,
        width=width,
        seed=seed,
        attention_eps=attention_eps,
        reduced=reduced,
        torch_fp16=torch_fp16,
    )
    with progress(not as_json) as step:
        result = plan_model(request, progress=step)
    _save(result, save)
    if as_json:
        print(json.dumps({k: v for k, v in result.items() if k != "ranges"}, indent=2))
        return
    for table in plan_table(result):
        out.print(table)


GATE_OFF = ("off", "none")


def _tolerances(atol: Optional[str], min_cosine, min_top1, min_pixel_agreement) -> dict:
    """The gates given on the command line (those not given keep the precision's defaults);
    `--atol off` turns the max-abs gate off."""
    given = {"min_cosine": min_cosine, "min_top1": min_top1, "min_pixel_agreement": min_pixel_agreement}
    overrides = {name: value for name, value in given.items() if value is not None}
    if atol is not None and atol.strip().lower() in GATE_OFF:
        overrides["max_abs"] = None
    elif atol is not None:
        try:
            value = float(atol)
        except ValueError:
            value = float("nan")
        if not 0 <= value < float("inf"):
            raise UserError(f"--atol {atol!r} is not valid", "use a number >= 0, or off to not gate the max abs error")
        overrides["max_abs"] = value
    return overrides


@app.command()
@handles_errors
def check(
    artifact: Path = typer.Argument(..., help="Artifact folder (or its model file)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name, for a bare .onnx without manifest."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Weights of the reference [default: those recorded in the manifest]."),
    data: Optional[Path] = typer.Option(None, "--data", help="Image folder or .npz [default: scikit-image sample photos]."),
    samples: int = typer.Option(8, "--samples", "-n", max=limits.SAMPLES_MAX, help="How many inputs to compare."),
    synthetic: bool = typer.Option(False, "--synthetic", help="Use random N(0,1) inputs instead of photos."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Batch (dynamic-batch artifacts)."),
    height: Optional[int] = typer.Option(None, "--height", help="Input height (dynamic artifacts)."),
    width: Optional[int] = typer.Option(None, "--width", help="Input width (dynamic artifacts)."),
    atol: Optional[str] = typer.Option(None, "--atol", help="Max abs error on logits, or off [default by precision: fp32 1e-4, not gated for fp16/int8]."),
    min_cosine: Optional[float] = typer.Option(None, "--min-cosine", help="Min per-sample cosine similarity."),
    min_top1: Optional[float] = typer.Option(None, "--min-top1", help="Min top-1 agreement (classification)."),
    min_pixel_agreement: Optional[float] = typer.Option(None, "--min-pixel-agreement", help="Min pixel agreement (segmentation)."),
    save: Optional[Path] = typer.Option(None, "--save", help="Also write the JSON report to this file."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Accuracy parity of an artifact against the PyTorch reference; exit 1 when it fails."""
    from evitdeploy.api import check_artifact
    from evitdeploy.report.tables import parity_table
    from evitdeploy.requests import CheckRequest

    request = CheckRequest(
        path=artifact,
        model_name=model,
        checkpoint=checkpoint,
        data=data,
        samples=samples,
        synthetic=synthetic,
        batch=batch,
        height=height,
        width=width,
        tolerance_overrides=_tolerances(atol, min_cosine=min_cosine, min_top1=min_top1, min_pixel_agreement=min_pixel_agreement),
    )
    with progress(not as_json) as step:
        report = check_artifact(request, progress=step)
    _save(report, save)
    _emit(report, as_json, parity_table)
    if not report["passed"]:
        raise typer.Exit(EXIT_CHECK_FAILED)


THREADS_OPTION = typer.Option(None, "--threads", max=limits.THREADS_MAX, help="Intra-op threads [default: all cores]. Keep it fixed between runs you compare.")
WARMUP_OPTION = typer.Option(10, "--warmup", max=limits.WARMUP_MAX, help="Untimed runs first.")
COUNT_OPTION = typer.Option(None, "--count", "-n", "--iterations", max=limits.COUNT_MAX, help="Timed runs [default: 50, or as many as --min-time takes].")
MIN_TIME_OPTION = typer.Option(0.0, "--min-time", "--min-duration", max=limits.MIN_TIME_MAX_S, help="Keep timing for at least this many seconds.")


@app.command()
@handles_errors
def bench(
    artifact: Path = typer.Argument(..., help="Artifact folder (or its model file)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name, for a bare .onnx without manifest."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Weights for --against-torch [default: the manifest's]."),
    threads: Optional[int] = THREADS_OPTION,
    warmup: int = WARMUP_OPTION,
    count: Optional[int] = COUNT_OPTION,
    min_time: float = MIN_TIME_OPTION,
    batch: Optional[int] = typer.Option(None, "--batch", help="Batch (dynamic-batch artifacts)."),
    height: Optional[int] = typer.Option(None, "--height", help="Input height (dynamic artifacts)."),
    width: Optional[int] = typer.Option(None, "--width", help="Input width (dynamic artifacts)."),
    against_torch: bool = typer.Option(False, "--against-torch", help="Also time PyTorch eager on the same input and report the ratio."),
    save: Optional[Path] = typer.Option(None, "--save", help="Also write the JSON result (the input of `gate` and `report`) to this file."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Latency of an artifact on this host: median, p90, p99, mean, std, throughput, every raw sample.

    The saved JSON keeps each timed iteration plus the host fingerprint (CPU, cores, threads, OS),
    runtime versions and the artifact's sha256, so `evitdeploy gate` can compare two runs.
    """
    from evitdeploy.api import bench_artifact
    from evitdeploy.report.tables import bench_table
    from evitdeploy.requests import BenchRequest

    request = BenchRequest(
        path=artifact,
        model_name=model,
        checkpoint=checkpoint,
        threads=threads,
        warmup=warmup,
        count=count,
        min_time_s=min_time,
        batch=batch,
        height=height,
        width=width,
        against_torch=against_torch,
    )
    with progress(not as_json) as step:
        summary = bench_artifact(request, progress=step)
    _save(summary, save)
    _emit(summary, as_json, bench_table)


@app.command()
@handles_errors
def predict(
    artifact: Path = typer.Argument(..., help="Artifact folder (or its model file)."),
    image: Path = typer.Argument(..., help="The photo to run: .png, .jpg, .jpeg, .bmp, .tif, .tiff or .webp."),
    output: Path = typer.Option(..., "--output", "-o", help="The PNG to write: the photo with the prediction drawn on it."),
    top: int = typer.Option(
        5, "--top", min=1, max=20, help="Classifiers: how many labels to list; segmenters: classes in the picture's legend."
    ),  # max: predict.TOP_MAX (not imported at start-up)
    point: Optional[list[str]] = typer.Option(
        None,
        "--point",
        metavar="X,Y[,LABEL]",
        help="Promptable (SAM) models: a prompt point in image pixels from the top-left corner; LABEL 1 foreground (default) or 0 background. Repeatable.",
    ),
    box: Optional[str] = typer.Option(
        None, "--box", metavar="X0,Y0,X1,Y1", help="Promptable (SAM) models: a prompt box in image pixels, top-left then bottom-right corner."
    ),
    multimask: bool = typer.Option(False, "--multimask", help="Promptable (SAM) models: show all three of SAM's multimask outputs with their predicted IoU."),
    save_mask: Optional[Path] = typer.Option(
        None,
        "--save-mask",
        metavar="FILE",
        help="Promptable (SAM) models: also write the mask at the photo's size: FILE.png (8-bit, 255 inside; with --multimask the "
        "highest-scored) or FILE.npy (every mask shown, (M, H, W) bool).",
    ),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name, for a bare model file without manifest."),
    threads: Optional[int] = THREADS_OPTION,
    force: bool = typer.Option(False, "--force", help="Replace an existing output PNG (and --save-mask file)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run one photo through an artifact and draw what the model predicts.

    The photo is preprocessed as the model's reference evaluates (the manifest's preprocessing:
    classifiers bicubic to size/0.95 then a center crop, segmenters OpenCV cubic, SAM bilinear to
    its longest side), with the same code a bundle gives an app. Classifiers: the top-K labels with
    their softmax probabilities (ImageNet names for 1000-class ImageNet models, "class N" for other
    heads); the PNG dims what the crop left out. Segmenters: the class map at the photo's size as
    a colour overlay in the dataset's palette, with each class's share of the pixels. SAM: a box or
    several points give SAM's single-mask output, one point the best of its three multimask
    outputs (--multimask: all three); --json gives each mask's predicted IoU, area and bbox.
    The latency is of one cold run (use `bench` to time a model).
    """
    from evitdeploy.predict import parse_box, parse_point, predict as run_predict
    from evitdeploy.requests import PredictRequest

    points = [parse_point(text) for text in point or ()]
    request = PredictRequest(
        path=artifact,
        image=image,
        output=output,
        model_name=model,
        top=top,
        points=tuple(xy for xy, _ in points),
        point_labels=tuple(label for _, label in points),
        box=parse_box(box) if box is not None else None,
        multimask=multimask,
        save_mask=save_mask,
        threads=threads,
        force=force,
    )
    with progress(not as_json) as step:
        prediction = run_predict(request, progress=step)
    if as_json:
        print(json.dumps(prediction, indent=2))
        return
    for line in _prediction_lines(prediction):
        _say(line)


def _prediction_lines(prediction: dict, most: int = 20) -> list[str]:
    """The prediction in words: what ran, the labels or classes, the PNG."""
    photo, result = prediction["image"], prediction["result"]
    lines = [
        f"{prediction['model']} ({prediction['target']} {prediction['precision']}) on {photo['path']} "
        f"({photo['width']}x{photo['height']}): {prediction['latency_ms']:.1f} ms"
    ]
    if "top" in result:
        lines += [f"  {entry['rank']:>2}. {entry['label']:<32} {entry['probability']:7.2%}" for entry in result["top"]]
    if "masks" in result:  # a promptable model: the mask(s) shown, and by which convention
        lines.append(f"  shown: {result['shown_by']}")
        lines += [f"  mask {m['index']}: predicted IoU {m['score']:.3f}, {m['area_fraction']:.1%} of the image, bbox {m['bbox']}" for m in result["masks"]]
        if result.get("mask_file"):
            lines.append(f"wrote {result['mask_file']}")
    if "classes" in result:
        lines += [f"  {entry['name']:<32} {entry['fraction']:7.2%}" for entry in result["classes"][:most]]
        if len(result["classes"]) > most:
            lines.append(f"  … and {len(result['classes']) - most} more classes (--json lists them all)")
    lines.append(f"wrote {prediction['output']}")
    return lines


@app.command("eval")
@handles_errors
def eval_(
    artifact: Path = typer.Argument(..., help="Artifact or bundle folder."),
    dataset: Path = typer.Option(
        ...,
        "--dataset",
        "-d",
        help="Labelled images: an ImageFolder (DATASET/<class>/<image>, classes.txt in the model's class order) for classifiers; "
        "images/ + masks/, Cityscapes (leftImg8bit/ + gtFine/ train ids) or ADE20K (images/ + annotations/) for segmenters.",
    ),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate this many images, drawn with --seed (a deterministic subset) [default: all]."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --limit subset and of the bootstrap intervals."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="The PyTorch reference's weights [default: the manifest's]."),
    threads: Optional[int] = THREADS_OPTION,
    save: Optional[Path] = typer.Option(None, "--save", help="Also write the eval JSON."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Accuracy on your labelled data: the artifact's task metric beside the PyTorch FP32 reference's.

    Every photo goes through the preprocessing the model is evaluated with and the same
    postprocessing `predict` and the bundle's app run, on the artifact's runtime and on PyTorch
    FP32. Classifiers: top-1, top-5, per-class accuracy. Segmenters: mIoU, pixel accuracy, per-class
    IoU at each photo's own size (255 ignored; ADE20K's 0 ignored and 1..150 shifted). Each figure
    has a 95% bootstrap interval over images; the artifact-minus-FP32 delta has its own, paired; the
    images where the two predict differently are counted. Exit 0 ok, 2 a dataset refused.
    """
    from evitdeploy.evaluation.run import evaluate
    from evitdeploy.requests import EvalRequest

    request = EvalRequest(path=artifact, dataset=dataset, limit=limit, seed=seed, checkpoint=checkpoint, threads=threads)
    with progress(not as_json) as step:
        report = evaluate(request, progress=step)
    _save(report, save)
    from evitdeploy.report.tables import evaluation_table

    _emit(report, as_json, evaluation_table)


@app.command()
@handles_errors
def gate(
    paths: list[Path] = typer.Argument(..., help="NEW.json (with --baseline OLD.json), or BASE_ARTIFACT NEW_ARTIFACT (with --interleave)."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", "-b", help="Bench JSON of the baseline (e.g. main's artifact)."),
    interleave: bool = typer.Option(
        False, "--interleave", help="Time two artifacts here, alternating A B B A ..., then gate (recommended on shared CI runners)."
    ),
    threshold: str = typer.Option("5%", "--threshold", help="Median slowdown that counts as a regression, e.g. 5% or 0.05."),
    alpha: float = typer.Option(0.01, "--alpha", help="Significance of the one-sided Mann-Whitney U test on the raw samples."),
    allow_mismatch: bool = typer.Option(False, "--allow-mismatch", help="Compare results from different hosts, backends, precisions or shapes anyway."),
    threads: Optional[int] = THREADS_OPTION,
    warmup: int = WARMUP_OPTION,
    count: Optional[int] = typer.Option(None, "--count", "-n", max=limits.COUNT_MAX, help="Timed runs per artifact with --interleave [default: 50]."),
    min_time: float = typer.Option(
        0.0, "--min-time", min=0.0, max=limits.MIN_TIME_MAX_S, help="With --interleave: keep alternating for at least this many seconds."
    ),  # min: refused without --interleave too (check_timing checks it only with)
    block: int = typer.Option(1, "--block", max=limits.BLOCK_MAX, help="With --interleave: timed runs per turn."),
    max_drop: Optional[float] = typer.Option(
        None,
        "--max-drop",
        min=0.0,
        max=100.0,
        help="With two eval results: the headline metric's drop, in points, that counts as a regression (top-1, mIoU, box mask mIoU) [default: 0.5].",
    ),
    markdown_file: Optional[Path] = typer.Option(None, "--markdown", help="Also write a Markdown summary (a CI job can post it as a PR comment)."),
    save: Optional[Path] = typer.Option(None, "--save", help="Also write the gate JSON (with both sides' raw samples for --interleave)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Fail (exit 1) only on a latency or accuracy regression that is both larger than its threshold and beyond noise.

    Latency (bench results): median slowdown > --threshold AND a one-sided Mann-Whitney U test on
    the raw samples gives p < alpha. Faster beyond noise is reported as an improvement (exit 0).
    Results from different hosts, backends, precisions or input shapes are refused (exit 2).

    Accuracy (eval results, `eval --save`): the headline metric drops more than --max-drop points
    AND the paired 95% bootstrap interval of the difference, over the same images, lies below zero.
    """
    from evitdeploy import gate as gating
    from evitdeploy.report.tables import gate_table

    if not interleave and len(paths) == 1 and baseline is not None:
        from evitdeploy.evaluation import compare

        if compare.kind_of(paths[0], "new") == "evaluation":
            _gate_accuracy(paths[0], baseline, max_drop=0.5 if max_drop is None else max_drop, markdown_file=markdown_file, save=save, as_json=as_json)
    if max_drop is not None:
        raise UserError("--max-drop gates eval results", "pass two files written by `evitdeploy eval --save`, or drop --max-drop")
    settings = gating.GateSettings(threshold=gating.parse_threshold(threshold), alpha=gating.check_alpha(alpha))
    if interleave:
        if len(paths) != 2 or baseline is not None:
            raise UserError("--interleave takes two artifacts: BASE_ARTIFACT NEW_ARTIFACT", "drop --baseline; e.g. `gate --interleave main-art/ pr-art/`")
        from evitdeploy.api import bench_interleaved
        from evitdeploy.requests import InterleaveRequest

        gating.check_samples_count(count)
        request = InterleaveRequest(
            baseline_path=paths[0],
            new_path=paths[1],
            threads=threads,
            warmup=warmup,
            count=count,
            min_time_s=min_time,
            block=block,
        )
        with progress(not as_json) as step:
            base_summary, new_summary = bench_interleaved(request, progress=step)
        report = gating.evaluate(base_summary, new_summary, settings, allow_mismatch=allow_mismatch, mode="interleaved")
        report["results"] = {"baseline": base_summary, "new": new_summary}
    else:
        if len(paths) != 1 or baseline is None:
            raise UserError("gate compares one NEW.json with --baseline OLD.json", "e.g. `gate pr.json --baseline main.json`, or use --interleave A B")
        report = gating.evaluate(gating.load_bench(baseline, "baseline"), gating.load_bench(paths[0], "new"), settings, allow_mismatch=allow_mismatch)
    _save(report, save)
    if markdown_file is not None:
        _write_text(markdown_file, gating.markdown(report))
    _emit(report, as_json, gate_table)
    raise typer.Exit(gating.exit_code(report))


@app.command()
@handles_errors
def report(
    results: list[Path] = typer.Argument(..., help="Result files: JSON from `check --save` / `bench --save`, or a `sweep` .jsonl."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write report.md (PNG plots beside it) or report.html (one self-contained file)."),
    columns: Optional[str] = typer.Option(None, "--columns", help="Comma list of table columns [default: all but eager_ms,speedup_vs_torch]."),
    title: str = typer.Option("evitdeploy report", "--title", help="Heading of the written report."),
    as_json: bool = JSON_OPTION,
) -> None:
    """One row per model x target x precision x resolution x device: size, parity, latency, throughput.

    With -o it also draws latency vs megapixels (log-log: linear attention should give slope ~1)
    and accuracy drift vs latency (the Pareto front across precisions and targets).
    """
    from evitdeploy.report.rows import load_results, parse_columns, report_rows
    from evitdeploy.report.tables import rows_table
    from evitdeploy.report.writers import write_report

    chosen = parse_columns(columns)
    rows = report_rows(load_results(results))
    written = write_report(rows, output, columns=chosen, title=title) if output is not None else []
    if as_json:
        print(json.dumps({"rows": rows, "written": [str(p) for p in written]}, indent=2))
        return
    out.print(rows_table(rows, chosen))
    for path in written:
        _say(f"wrote {path}")


@app.command()
@handles_errors
def sweep(
    model: str = typer.Option(..., "--model", "-m", help="Model name(s), comma-separated."),
    output: Path = typer.Option(..., "--output", "-o", help="Results .jsonl: one line per cell, appended; cells already there are skipped."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Target(s), comma-separated [default: onnx, or each --profile's]."),
    profile: Optional[str] = typer.Option(
        None,
        "--profile",
        "-P",
        help="Device profile(s), comma-separated: cells use each profile's target, tolerances and threads; on a farm each bench runs on a node of its profile.",
    ),
    precision: str = typer.Option("fp32", "--precision", "-p", help="Precision(s), comma-separated."),
    resolution: Optional[str] = typer.Option(
        None, "--resolution", "-r", help="Sizes, comma-separated: 224 or HEIGHTxWIDTH (1024x2048) [default: each model's own]."
    ),
    artifacts: Optional[Path] = typer.Option(None, "--artifacts", help="Where cell artifacts go [default: OUTPUT's name + '-artifacts']."),
    samples: int = typer.Option(8, "--samples", max=limits.SAMPLES_MAX, help="Parity inputs per cell."),
    threads: Optional[int] = THREADS_OPTION,
    warmup: int = WARMUP_OPTION,
    count: Optional[int] = typer.Option(None, "--count", "-n", max=limits.COUNT_MAX, help="Timed runs per cell [default: 50]."),
    min_time: float = typer.Option(0.0, "--min-time", max=limits.MIN_TIME_MAX_S, help="Keep timing each cell for at least this many seconds."),
    data: Optional[Path] = typer.Option(None, "--data", help="Image folder or .npz for parity [default: scikit-image sample photos]."),
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", "-c", help="Local .pt/.pth/.safetensors weights every cell exports (one model in the grid) [default: random init]."
    ),
    dataset: Optional[Path] = DATASET_OPTION,
    dataset_limit: Optional[int] = DATASET_LIMIT_OPTION,
    int8_plan: str = INT8_PLAN_OPTION,
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Run again the cells recorded as failed."),
    option: Optional[list[str]] = OPTION_OPTION,
    executor: str = typer.Option("local", "--executor", help="local: every cell on this host, in turn. ray: over a Ray cluster (evitdeploy[farm])."),
    address: Optional[str] = typer.Option(
        None,
        "--address",
        help="With --executor ray: the head's HOST:PORT, or 'auto' for the cluster running here [default: start Ray on this machine alone].",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run export -> check -> bench for every cell of a grid; exit 1 if any cell failed.

    Each cell is independent: a CI matrix can run one cell per job (same flags, one value each)
    and `evitdeploy report` reads all the .jsonl files together. With --executor ray the grid fans
    out over a farm: exports and checks on any node with the backend (many at once), each bench on
    a node of its profile, alone on it; a grid no node can serve is refused before any work (exit 3).
    """
    from evitdeploy.report.rows import report_rows
    from evitdeploy.report.tables import rows_table
    from evitdeploy.sweep import OK, CellSettings, make_executor, plan_cells, run_sweep, split_list

    farm = make_executor(executor, address)  # a wrong --executor / --address is refused before the grid is planned
    models = split_list(model, "models")
    if resolution is None:
        from evitdeploy.models import get_spec

        resolutions = [f"{get_spec(m).height}x{get_spec(m).width}" for m in models]
    else:
        resolutions = split_list(resolution, "resolutions")
    if samples < 1:
        raise UserError(f"--samples {samples} is not valid", "use 1 or more")
    if profile is not None and target is not None:
        raise UserError("--target and --profile both choose the cells' targets", "pass one: --profile takes each profile's target")
    from evitdeploy.profiles import load_profile

    profiles = [load_profile(name) for name in split_list(profile, "profiles")] if profile is not None else []
    cells = plan_cells(
        models,
        split_list(target or "onnx", "targets"),
        split_list(precision, "precisions"),
        resolutions=list(dict.fromkeys(resolutions)),
        samples=samples,
        profiles=profiles,
    )
    backend_options = parse_option_flags(option)
    if backend_options and profiles:
        raise UserError("--option and --profile both set the cells' options", "put the options in the profile's [options], or drop --profile")
    check_grid_options({cell.target for cell in cells}, backend_options)
    settings = CellSettings(
        samples=samples,
        warmup=warmup,
        count=count,
        min_time_s=min_time,
        threads=threads,
        data=str(data) if data else None,
        checkpoint=_grid_checkpoint(checkpoint, models),
        dataset=_dataset_folder(dataset, dataset_limit),
        dataset_limit=dataset_limit,
        int8_plan=_int8_plan(int8_plan),
        backend_options=backend_options,
    )
    if output.name in ("", ".", ".."):  # ".", "/": no file name to append to, nor to name the artifacts after
        raise UserError(f"--output {output} names a folder; sweep appends its results to a file", "e.g. --output results.jsonl")
    folder = artifacts or output.with_name(output.stem + "-artifacts")
    with progress(True) as step:
        summary = run_sweep(cells, output, artifacts=folder, settings=settings, retry_failed=retry_failed, progress=step, executor=farm, profiles=profiles)
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        out.print(rows_table(report_rows(summary["cells"])))
        _say(f"{len(summary['ran'])} cell(s) run, {len(summary['skipped'])} skipped (already in {output}); artifacts in {folder}")
    if any(record["status"] != OK for record in summary["cells"]):
        raise typer.Exit(EXIT_CHECK_FAILED)


@app.command()
@handles_errors
def worker(
    address: Optional[str] = typer.Option(None, "--address", help="The farm head's HOST:PORT to join (what `worker --head` printed)."),
    head: bool = typer.Option(False, "--head", help="Start the farm's head here instead (this host is a node of the farm too)."),
    profile: Optional[list[str]] = typer.Option(
        None,
        "--profile",
        "-P",
        help="A profile this host is (repeatable) [default: every shipped profile this host is of]; one it is not is refused.",
    ),
    num_cpus: Optional[int] = typer.Option(None, "--num-cpus", min=1, help="CPUs this node lends to exports [default: all]."),
    port: int = typer.Option(6379, "--port", min=1, max=65535, help="With --head: the port the head listens on."),
    node_ip: Optional[str] = typer.Option(None, "--node-ip-address", help="The address other nodes reach this one at [default: Ray's choice]."),
    bench_only: bool = typer.Option(False, "--bench-only", help="Only time cells here (a device whose CPUs should not convert); exports go to other nodes."),
    stop: bool = typer.Option(False, "--stop", help="Leave the farm: stop Ray's processes on this host (`ray stop`)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be advertised and the `ray start` command; start nothing."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Join a sweep farm as a node (wrapping `ray start`), advertising as Ray custom resources the
    profiles this host really is (the rule `deploy` judges budgets by: a node that is not a Jetson
    cannot claim jetson-orin-nano) and the backends installed here (what `doctor` finds).

    Then, on any machine: `evitdeploy sweep ... --executor ray --address HEAD:PORT`.
    """
    from evitdeploy.sweep.farm.cluster import ray_stop_command, run_ray, worker_plan

    if stop:
        report = {"role": "stopped", "command": ray_stop_command()}
        if not dry_run:
            report.update(run_ray(report["command"]))
    else:
        if head == (address is not None):
            raise UserError(
                "pass exactly one of --address HEAD:PORT (join a farm) and --head (start one)",
                "e.g. `evitdeploy worker --head`, then `evitdeploy worker --address HEAD:6379` on each device",
            )
        report = worker_plan(address, profiles=profile, num_cpus=num_cpus, port=port, node_ip=node_ip, bench_only=bench_only)
        if not dry_run:
            report.update(run_ray(report["command"]))
    if as_json:
        print(json.dumps(report, indent=2))
        return
    if report["role"] == "stopped":
        _say(("would run: " + shlex.join(report["command"])) if dry_run else "stopped Ray on this host")
        return
    _say(
        f"{'would start' if dry_run else 'started'} a farm {report['role']} advertising profiles {', '.join(report['profiles']) or '(none)'}; backends {', '.join(report['backends'])}"
        + ("; benches only" if report["bench_only"] else "")
    )
    _say("command: " + shlex.join(report["command"]))
    if not dry_run and report["role"] == "head":
        _say(
            f"join devices with `evitdeploy worker --address <this host>:{port}`; run grids with `evitdeploy sweep ... --executor ray --address <this host>:{port}`"
        )


def _gate_accuracy(new: Path, baseline: Path, *, max_drop: float, markdown_file: Optional[Path], save: Optional[Path], as_json: bool) -> None:
    from evitdeploy.evaluation import compare
    from evitdeploy.report.tables import accuracy_gate_table

    report = compare.compare(compare.load_eval(baseline, "baseline"), compare.load_eval(new, "new"), max_drop=max_drop)
    _save(report, save)
    if markdown_file is not None:
        _write_text(markdown_file, compare.markdown(report))
    _emit(report, as_json, accuracy_gate_table)
    raise typer.Exit(EXIT_CHECK_FAILED if report["verdict"] == compare.REGRESSION else 0)


@app.command()
@handles_errors
def profiles(as_json: bool = JSON_OPTION) -> None:
    """The shipped deployment profiles: backend, precision, latency budget, and whether each runs here."""
    from evitdeploy.profiles import list_profiles
    from evitdeploy.report.tables import profiles_table

    _emit(list_profiles(), as_json, profiles_table)


@app.command()
@handles_errors
def deploy(
    profile: str = typer.Option(..., "--profile", "-P", help="Shipped profile name (see `evitdeploy profiles`) or your own .toml."),
    model: str = MODEL_OPTION,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Bundle folder [default: MODEL-PROFILE-PRECISION, or MODEL-PROFILE-auto]."),
    precision: Optional[str] = typer.Option(
        None,
        "--precision",
        "-p",
        help="One of the profile's precisions, or 'auto': measure every candidate backend x precision the profile offers and deploy the fastest "
        "that passes its tolerances [default: the profile's].",
    ),
    backend: Optional[str] = typer.Option(None, "--backend", help="One of the profile's candidate backends instead of its own (see its candidates)."),
    option: Optional[list[str]] = OPTION_OPTION,
    executor: Optional[str] = typer.Option(
        None,
        "--executor",
        help="With --precision auto: measure the candidates on this host (local) or on a Ray farm node of the profile (ray) [default: local].",
    ),
    address: Optional[str] = typer.Option(None, "--address", help="With --executor ray: the cluster, HOST:PORT or auto [default: start Ray on this machine]."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Local .pt/.pth/.safetensors weights; random init if omitted."),
    height: Optional[int] = typer.Option(None, "--height", help="Input height, overriding the profile's [default: the profile's, else the model's]."),
    width: Optional[int] = typer.Option(None, "--width", help="Input width, overriding the profile's [default: the profile's, else the model's]."),
    data: Optional[Path] = typer.Option(None, "--data", help="Image folder or .npz for parity and the reference data [default: scikit-image sample photos]."),
    preprocessing: Optional[Path] = PREPROCESSING_OPTION,
    samples: int = typer.Option(8, "--samples", "-n", max=limits.SAMPLES_MAX, help="Photos compared with PyTorch (the bundle keeps up to 4 as reference)."),
    seed: int = SEED_OPTION,
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle folder."),
    calib: Optional[str] = CALIB_OPTION,
    calib_count: Optional[int] = CALIB_COUNT_OPTION,
    calib_method: str = CALIB_METHOD_OPTION,
    fp16_io: bool = FP16_IO_OPTION,
    fp16_margin: float = FP16_MARGIN_OPTION,
    min_cosine_target: float = MIN_COSINE_OPTION,
    search_budget: int = SEARCH_BUDGET_OPTION,
    int8_kernels: Optional[str] = INT8_KERNELS_OPTION,
    int8_plan: str = INT8_PLAN_OPTION,
    dataset: Optional[Path] = DATASET_OPTION,
    dataset_limit: Optional[int] = DATASET_LIMIT_OPTION,
    max_drop: Optional[float] = typer.Option(
        None,
        "--max-drop",
        help="With --dataset: the most points of the headline metric (top-1, mIoU, box mask mIoU) the artifact may lose against PyTorch FP32 "
        "on it; with --precision auto a candidate that loses more loses, else the deploy fails (exit 1) [default: reported, not judged].",
    ),
    eval_subset: Optional[int] = typer.Option(
        None,
        "--eval-subset",
        min=1,
        help="With --dataset: carry this many of its labelled photos in the bundle; the bundle's verify.py scores them on the device "
        "with numpy + the runtime and fails beyond --max-drop.",
    ),
    sign_key: Optional[Path] = typer.Option(
        None,
        "--sign-key",
        help="Sign the bundle (model.sig, OpenSSF model signing) with this PEM EC private key; needs evitdeploy[signing].",
    ),
    save: Optional[Path] = typer.Option(None, "--save", help="Also write the deploy summary JSON to this file."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Export -> check -> bench -> bundle for a device profile, then one summary.

    Exit 1 when parity fails the profile's tolerances, or when the latency budget is exceeded on a
    host of the profile's kind (on any other host latency is reported, not judged). The bundle is
    written either way; copy it to the device and run `python3 verify.py` there.

    --precision auto: every candidate backend the profile lists (its `candidates`, e.g. ONNX Runtime
    and OpenVINO for x86) is exported, checked and timed at each of the profile's precisions it
    builds, and the fastest by the profile's latency statistic that passes the profile's tolerances
    is deployed. A second table says why each other candidate lost: slower by how much (and whether
    beyond noise), the tolerance it missed, or the stage it failed at. The measurements stay in
    OUTPUT-candidates/ beside the bundle (OUTPUT is MODEL-PROFILE-auto unless -o says). Exit 1,
    with no bundle, when no candidate passes.
    """
    from evitdeploy.autoselect import deploy_fastest
    from evitdeploy.deploy import deploy as deploy_one
    from evitdeploy.report.tables import deploy_table
    from evitdeploy.requests import DeployRequest

    reduced = _precision_options(
        calib=calib,
        calib_count=calib_count,
        calib_method=calib_method,
        fp16_io=fp16_io,
        fp16_margin=fp16_margin,
        min_cosine=min_cosine_target,
        search_budget=search_budget,
        int8_kernels=int8_kernels,
        int8_plan=int8_plan,
    )
    request = DeployRequest(
        profile=profile,
        model=model,
        output=output,
        precision=precision,
        backend=backend,
        checkpoint=checkpoint,
        reduced=reduced,
        backend_options=parse_option_flags(option),
        data=data,
        preprocessing=preprocessing,
        samples=samples,
        seed=seed,
        force=force,
        height=height,
        width=width,
        sign_key=sign_key,
        executor=executor,
        address=address,
        dataset=dataset,
        dataset_limit=dataset_limit,
        max_drop=max_drop,
        eval_subset=eval_subset,
    )
    with progress(not as_json) as step:
        summary = (deploy_fastest if precision == "auto" else deploy_one)(request, progress=step)
    _save(summary, save)
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        if summary["bundle"] is not None:
            out.print(deploy_table(summary))
        if "selection" in summary:
            from evitdeploy.report.selection import selection_table

            out.print(selection_table(summary["selection"]))
            if summary["bundle"] is None:
                _say("; ".join(summary["failures"]))
    if not summary["passed"]:
        raise typer.Exit(EXIT_CHECK_FAILED)


@app.command()
@handles_errors
def verify(
    bundle: Path = typer.Argument(..., help="Bundle folder written by `evitdeploy deploy`."),
    threads: Optional[int] = typer.Option(None, "--threads", max=limits.THREADS_MAX, help="Intra-op threads [default: the profile's]."),
    warmup: Optional[int] = typer.Option(None, "--warmup", max=limits.WARMUP_MAX, help="Untimed runs [default: the profile's]."),
    count: Optional[int] = typer.Option(None, "--count", "-n", max=limits.COUNT_MAX, help="Timed runs; 0 skips latency [default: the profile's]."),
    public_key: Optional[Path] = typer.Option(
        None,
        "--public-key",
        help="Check the bundle's signature (model.sig) with this PEM public key before anything else; needs evitdeploy[signing].",
    ),
    save: Optional[Path] = typer.Option(None, "--save", help="Also write the verification JSON to this file."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run a bundle's own verification here: sha256 of every file, parity with its reference
    outputs, latency; exactly what `python3 verify.py` does on the device. Exit 1 on failure."""
    from evitdeploy.bundle import verify_bundle
    from evitdeploy.report.tables import verification_table

    report = verify_bundle(bundle, threads=threads, warmup=warmup, count=count, public_key=public_key)
    _save(report, save)
    _emit(report, as_json, verification_table)
    if not report["passed"]:
        raise typer.Exit(EXIT_CHECK_FAILED)


@app.command()
@handles_errors
def build(
    bundle: Path = typer.Argument(..., help="A TensorRT bundle (from `deploy --profile jetson-orin-nano` etc.)."),
    workspace_mib: int = typer.Option(4096, "--workspace", help="Builder workspace limit in MiB."),
    count: int = typer.Option(100, "--count", "-n", max=limits.COUNT_MAX, help="Timed runs for GPU compute time (after 20 warm-up runs)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """On the device: build the bundle's TensorRT engine(s) from its ONNX + precision plan + shapes
    (cached beside the bundle by TensorRT version and GPU), check them against reference.npz and
    report GPU compute time median/p90/p99: the bundle's own verify.py code. Exit 1 on a parity miss."""
    from evitdeploy.backends.tensorrt.build import build_in_bundle

    with progress(not as_json) as step:
        report = build_in_bundle(bundle, workspace_mib, count, progress=step)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        for file, record in report["engines"].items():
            dla = record.get("dla")
            _say(
                f"{file}: {record.get('typing')} build on {report['gpu']} with {report['builder']} in {report['engine_cache']}"
                + (f"; DLA core {dla['core']}: {len(dla['gpu_fallback'])} of {dla['layers']} layers fall back to the GPU" if dla else "")
            )
        _say(f"parity {'PASSED' if report['passed'] else 'FAILED: ' + '; '.join(report['failures'])}")
        for key, what in (("gpu_compute", "engine"), ("decoder_gpu_compute", "decoder engine, per prompt")):
            gpu = report.get(key)
            if gpu:
                _say(f"{what}: GPU compute median {gpu['median_ms']:.3f} ms, p90 {gpu['p90_ms']:.3f}, p99 {gpu['p99_ms']:.3f}")
    if not report["passed"]:
        raise typer.Exit(EXIT_CHECK_FAILED)


@app.command()
@handles_errors
def doctor(as_json: bool = JSON_OPTION) -> None:
    """Which backends are installed, their versions, and how to install the missing ones."""
    from evitdeploy.doctor import diagnose
    from evitdeploy.errors import EXIT_BACKEND_UNAVAILABLE
    from evitdeploy.report.tables import doctor_table

    diagnosis = diagnose()
    _emit(diagnosis, as_json, doctor_table)
    if not diagnosis["core_ok"]:
        raise typer.Exit(EXIT_BACKEND_UNAVAILABLE)


def run() -> None:
    app(prog_name="evitdeploy")


if __name__ == "__main__":
    sys.exit(run())
