"""The `softedge` command line: a thin click layer over library functions.

Exit codes (every command; README "Exit codes"):
    0    success
    1    a check failed (drift or agreement beyond its threshold, a non-finite measurement,
         device check out of tolerance)
    2    bad usage or invalid input (click's own usage errors, ConfigError): nothing written
    3    a file could not be read, was refused or could not be written, or is locked by another
         softedge command (ArtifactError, a bundle the runtime cannot load)
    4    a layer softedge cannot quantize (UnsupportedLayerError)
    5    softedge itself failed (a bug): one line, and the traceback with --verbose
    130  interrupted (Ctrl-C, SIGTERM): what was there before is left as it was
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import signal
import sys
from pathlib import Path

import click

from app.arm64 import CPUS as ARM64_CPUS
from app.arm64 import DEFAULT_CPUS as ARM64_DEFAULT_CPUS
from app.console import routed_output
from app.options import Choices, Finite, Numbers, Widths
from export.device.families import KernelFamily
from export.targets import Target
from models.tasks import Task
from toolkit.device_families import DEVICE_ARITHMETIC_NAMES, device_arithmetic_named
from toolkit.roundings import PtqRounding, Rounding

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LOG_NAME = "softedge.log"  # in the run directory: what TensorFlow and the converter printed
_console = None            # the terminal while a command routes library output away


def echo(message: str = "", err: bool = False) -> None:
    """Prints on the terminal, never into the log, also while library output is routed away."""
    if _console is None:
        click.echo(message, err=err)
    else:
        click.echo(message, file=_console.err if err else _console.out)


@contextlib.contextmanager
def quiet(log_path=None, verbose: bool = False):
    """Library output (TensorFlow's C++ and Python logs, the converter's) goes to `log_path` and,
    with `verbose`, to the terminal; `echo` still reaches the terminal."""
    global _console
    with routed_output(log_path, verbose) as console:
        previous, _console = _console, console
        try:
            yield console
        except (Exception, KeyboardInterrupt, Interrupted) as error:
            print(f"softedge: {one_line(error)}", file=sys.stderr, flush=True)   # into the log too
            raise
        finally:
            _console = previous


def verbose_option(command):
    return click.option("--verbose", is_flag=True,
                        help=f"Also print TensorFlow's and the converter's output (train and export always keep it "
                             f"in RUN/{LOG_NAME}).")(command)

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_ARTIFACT, EXIT_UNSUPPORTED, EXIT_INTERNAL = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it


class Interrupted(BaseException):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that every `finally` cleans up."""


def _loaded(module: str, name: str) -> tuple:
    """The class `module.name` if that module is loaded, else (): the error path imports nothing,
    for an interrupt can arrive while TensorFlow is half imported (and an error raised before
    softedge's modules loaded cannot be one of their classes)."""
    found = getattr(sys.modules.get(module), name, None)
    return (found,) if isinstance(found, type) else ()


def _interrupt(error: BaseException) -> bool:
    """Ctrl-C or SIGTERM, also where it arrived while TensorFlow's C++ built an exception:
    pybind11 then raises RuntimeError("... REPLACED BY KeyboardInterrupt ...") (seen in the SIGINT
    test, an interrupt while `predict` traced its function)."""
    if isinstance(error, (KeyboardInterrupt, Interrupted)):
        return True
    return isinstance(error, RuntimeError) and any(f"REPLACED BY {name}" in str(error)
                                                   for name in ("KeyboardInterrupt", "Interrupted"))


def _exit_code(error: BaseException) -> int:
    if _interrupt(error):
        return EXIT_INTERRUPTED
    if isinstance(error, (*_loaded("toolkit.errors", "ArtifactError"), *_loaded("export.device.check", "BundleError"))):
        return EXIT_ARTIFACT
    if isinstance(error, _loaded("toolkit.errors", "UnsupportedLayerError")):
        return EXIT_UNSUPPORTED
    if isinstance(error, _loaded("toolkit.errors", "SoftedgeError")):
        return EXIT_USAGE
    return EXIT_INTERNAL


def one_line(error: BaseException) -> str:
    """The error's message on one line."""
    if _interrupt(error):
        return "Interrupted: what was there before is as it was (an interrupted train keeps its checkpoint: --resume)."
    text = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
    if isinstance(error, (*_loaded("toolkit.errors", "SoftedgeError"), *_loaded("export.device.check", "BundleError"))):
        return f"Error: {text}"
    return (f"Error: softedge failed unexpectedly ({type(error).__name__}: {text or 'no message'}); "
            f"run with --verbose for the traceback.")


def _after_interrupt(unraisable) -> None:
    """After an interrupt, Python's "Exception ignored in ..." reports of the code it cut short
    are not news (a TensorFlow graph interrupted while traced leaves context managers that raise
    when finalized at exit): the command has said why it stopped, and its exit code is 130.
    Installed by the signal handlers while the interrupt unwinds a command (`handles_errors`
    puts the caller's hook back), and by `entry` for the exit of the process."""


def _raise_interrupted(signum, frame):
    sys.unraisablehook = _after_interrupt
    raise Interrupted()


def _raise_keyboard_interrupt(signum, frame):
    """Ctrl-C as Python raises it, with the reports of what it cuts short silenced from the
    moment it arrives (they can come while the interrupt unwinds, before the command ends)."""
    sys.unraisablehook = _after_interrupt
    raise KeyboardInterrupt


def handles_errors(command):
    """Every failure becomes one line on stderr and its exit code (module docstring); with
    --verbose an unexpected error also prints its traceback. SIGTERM is handled as Ctrl-C."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        previous = signal.getsignal(signal.SIGTERM)
        previous_int = signal.getsignal(signal.SIGINT)
        previous_hook = sys.unraisablehook
        with contextlib.suppress(ValueError):  # only the main thread may set handlers
            signal.signal(signal.SIGTERM, _raise_interrupted)
            if previous_int is signal.default_int_handler:
                signal.signal(signal.SIGINT, _raise_keyboard_interrupt)
        try:
            return command(*args, **kwargs)
        except (Exception, KeyboardInterrupt, Interrupted) as error:
            code = _exit_code(error)
            if code == EXIT_INTERNAL and kwargs.get("verbose"):
                import traceback

                echo("".join(traceback.format_exception(error)).rstrip(), err=True)
            echo(one_line(error), err=True)
            sys.exit(code)
        finally:
            sys.unraisablehook = previous_hook   # a caller in this process (a test) keeps its own
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signal.SIGTERM, previous)
                if signal.getsignal(signal.SIGINT) is _raise_keyboard_interrupt:
                    signal.signal(signal.SIGINT, previous_int)

    return wrapper


def task_option(command):
    """--task, a `Task`; by default the zoo model's, else read off the labels."""
    return click.option("--task", type=click.Choice(Task.names()), default=None,
                        help="Default: the zoo model's, else from the labels (1-D integers: classification; floats: "
                             "regression). anomaly: an autoencoder, scored by reconstruction error (ROC AUC).")(command)


def seed_option(command):
    return click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0, max=2**32 - 1),
                        help="Random seed (0 .. 2^32-1).")(command)


def json_option(command):
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(command)


def echo_run_summary(summary: dict, how: str, run_dir, as_json: bool) -> None:
    """A run's summary: JSON, or one line with the float and quantized metric of its task."""
    if as_json:
        echo(json.dumps(summary, indent=2))
        return
    metric = Task(summary["task"]).metric
    echo(f"float {metric} {summary[f'float_{metric}']:.4f}; quantized ({how}) {summary[f'smooth_{metric}']:.4f}; "
         f"run in {run_dir}")


def width_options(weight_bits: int):
    """--weight-bits (default `weight_bits`) and --activation-bits (default 8)."""
    def decorate(command):
        command = click.option("--activation-bits", default=8, show_default=True, type=click.IntRange(2, 8),
                               help="Activation bits, 2..8.")(command)
        return click.option("--weight-bits", default=weight_bits, show_default=True, type=click.IntRange(2, 8),
                            help="Kernel bits, 2..8.")(command)
    return decorate


def set_seed(seed: int) -> None:
    import keras

    keras.utils.set_random_seed(seed)


def entry() -> None:
    """The `softedge` console entry: `main`, and once the command has finished (its files are in
    place, its exit status decided), a late Ctrl-C is ignored, so that it cannot turn a finished
    command into one killed by SIGINT while the interpreter shuts down."""
    try:
        main()
    except SystemExit as done:
        if done.code == EXIT_INTERRUPTED:   # the process ends here: what the interrupt cut short
            sys.unraisablehook = _after_interrupt   # is finalized now, and raises (`_after_interrupt`)
        raise
    finally:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGINT, signal.SIG_IGN)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="softedge")
def main():
    """softedge: differentiable rounding, quantization-aware training, exact TFLite export."""


@main.command()
@click.option(
    "--alphas",
    default="0,0.5,1,2,5,10,20",
    show_default=True,
    type=Numbers(low=0),
    help="Comma-separated sharpness values (finite, >= 0) for the soft methods.",
)
@click.option("--eps", default=1e-6, show_default=True, type=Finite(low=0, low_open=True), help="Finite-difference step.")
@click.option("--tolerance", default=1e-5, show_default=True, type=Finite(low=0), help="Max scaled error.")
@seed_option
@json_option
@verbose_option
@handles_errors
def gradcheck(alphas, eps, tolerance, seed, as_json, verbose):
    """Check every rounding method's analytic gradient against finite differences.

    Differentiates each method's smooth surrogate numerically (identity for ste, the curve for
    soft/sigmoid) and prints the max scaled error; exits 1 if any exceeds --tolerance.

    \b
    Example: softedge gradcheck --alphas 0,1,5 --json
    """
    with quiet(verbose=verbose):
        from toolkit.gradcheck import gradcheck_table

        set_seed(seed)
        results = gradcheck_table(alphas, eps=eps)
        worst = max(max(r.max_error_x, r.max_error_alpha or 0.0) for r in results)
        if as_json:
            echo(json.dumps({"results": [r.to_dict() for r in results], "max_error": worst}, indent=2))
        else:
            echo(format_gradcheck_table(results))
    sys.exit(EXIT_OK if worst <= tolerance else EXIT_CHECK_FAILED)


def epoch_progress(label: str, epochs: int, enabled: bool = True):
    """A Keras callback that drives a click progress bar (on stderr) over the epochs of one phase."""
    import keras

    class _Progress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            stream = _console.err if _console is not None else sys.stderr
            self.bar = click.progressbar(length=epochs, label=label, file=stream) if enabled else None
            self.done = None
            if self.bar:
                self.bar.__enter__()

        def on_epoch_begin(self, epoch, logs=None):
            if self.bar and self.done is None:   # a resumed run starts part-way
                self.bar.update(epoch)
            self.done = epoch

        def on_epoch_end(self, epoch, logs=None):
            if self.bar:
                self.bar.update(1)

        def on_train_end(self, logs=None):
            if self.bar:
                self.bar.__exit__(None, None, None)

    return _Progress()


@main.command()
@click.option("--model", "model_name", default="digits_cnn", show_default=True,
              help="Zoo model name, or a path to your trained float Keras 3 .keras model (float training skipped).")
@click.option("--data", default="digits", show_default=True,
              help="digits, mnist1d, synthetic (generated for the zoo model), a path to an .npz, or a directory "
                   "(or glob) of .npz shards with test.npz beside them, streamed from disk.")
@width_options(weight_bits=8)
@click.option("--rounding", type=click.Choice(Rounding.training_names()), default=Rounding.SOFT.value, show_default=True,
              help="How QAT rounds the weights: ste (straight-through), soft (soft round, annealed) or sigmoid.")
@click.option("--step", type=click.Choice(["auto", "learned", "max-abs"]), default="auto", show_default=True,
              help="Kernel step: learned (LSQ), max-abs, or auto (learned at 2 bits).")
@click.option("--float-epochs", default=30, show_default=True, type=click.IntRange(min=1),
              envvar="SOFTEDGE_FLOAT_EPOCHS", show_envvar=True,
              help="Epochs of float training of a zoo model (skipped for --model my.keras).")
@click.option("--qat-epochs", default=10, show_default=True, type=click.IntRange(min=1),
              envvar="SOFTEDGE_QAT_EPOCHS", show_envvar=True,
              help="Epochs of quantization-aware fine-tuning, the rounding annealed from soft to hard.")
@click.option("--alpha-end", default=1e4, show_default=True, type=Finite(low=0, low_open=True),
              help="Final rounding sharpness (> 0).")
@click.option("--steps-per-execution", type=click.IntRange(min=1), default=None,
              help="Training steps per compiled call (default: up to 16, one epoch at most).")
@click.option("--device-arithmetic", type=click.Choice(DEVICE_ARITHMETIC_NAMES), default="xnnpack", show_default=True,
              help="The last --device-epochs QAT epochs compute the kernel layers, two-input Adds and the input quantizer "
                   "as this kernel family and an int8-input host do (exact int32 accumulators, its multipliers and "
                   "rounding; straight-through gradients), so the trained model computes the device's integers; "
                   "none: the float simulation throughout.")
@click.option("--device-epochs", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many of the last QAT epochs run on --device-arithmetic (unused with none).")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="Run directory to write.")
@task_option
@click.option("--scheme", "scheme_path", default=None, type=click.Path(dir_okay=False),
              help="A QuantScheme JSON (per-layer bit widths, e.g. from `softedge plan`); replaces --weight-bits, "
                   "--activation-bits, --rounding and --step.")
@click.option("--strategy", type=click.Choice(["none", "mirrored", "multi-worker"]), default="none", show_default=True,
              help="mirrored: every local GPU (or the CPU); multi-worker: the cluster in TF_CONFIG, one command "
                   "per worker (README: several hosts).")
@click.option("--overwrite", is_flag=True,
              help="Replace RUN when it holds another run (its exports too); without it such a RUN is refused.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run from its last checkpoint (RUN/checkpoint, saved every epoch), to "
                   "the result the uninterrupted run has; give the options it was started with.")
@seed_option
@json_option
@verbose_option
@handles_errors
def train(model_name, data, weight_bits, activation_bits, rounding, step, float_epochs, qat_epochs,
          alpha_end, steps_per_execution, device_arithmetic, device_epochs, run_dir, task, scheme_path, strategy, overwrite, resume, seed, as_json,
          verbose):
    """Train a zoo model in float (or take your trained .keras model), quantize it, and fine-tune
    with the rounding annealed to hard.

    Writes RUN/config.json, versions.json, float.keras, smooth.keras, history.json, summary.json,
    and appends what TensorFlow printed to RUN/softedge.log. Saves a checkpoint after every
    epoch (RUN/checkpoint, deleted when the run finishes) that --resume continues from.

    \b
    Example: softedge train --model mnist1d_cnn --data mnist1d --weight-bits 3 --run runs/m1d-w3
             softedge train --model my_float.keras --data my.npz --weight-bits 4 --run runs/mine
             softedge train --model mnist1d_cnn --data mnist1d --weight-bits 3 --run runs/m1d-w3 --resume
             TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker",
             "index": 0}}' softedge train ... --strategy multi-worker   (on each host, its own index)
    """
    with quiet(Path(run_dir) / LOG_NAME, verbose):
        from toolkit.distribute import strategy_named

        distribution = strategy_named(strategy)   # first: collective ops are configured before TensorFlow runs

        from app.runs import RunConfig, train_run
        from models.training import Recipe, learned_step_for
        from toolkit.scheme import QuantScheme

        set_seed(seed)
        scheme = read_scheme(scheme_path) or QuantScheme(weight_bits=weight_bits, activation_bits=activation_bits,
                                                         rounding=rounding, learned_step=learned_step_for(weight_bits, step))
        recipe = Recipe(float_epochs=float_epochs, qat_epochs=qat_epochs, alpha_end=alpha_end,
                        steps_per_execution=steps_per_execution,
                        **device_arithmetic_named(device_arithmetic, device_epochs))
        summary = train_run(RunConfig(model_name, data, scheme, recipe, seed, task), run_dir,
                            callbacks=[epoch_progress("fine-tuning (QAT)", qat_epochs, enabled=not as_json)],
                            float_callbacks=[epoch_progress("float training", float_epochs, enabled=not as_json)],
                            strategy=distribution, resume=resume, overwrite=overwrite, notify=lambda text: echo(text, err=True))
        ending = ", then hard" if summary["ended_hard"] else ""
        echo_run_summary(summary, f"annealed to alpha {summary['final_alpha']:g}{ending}", run_dir, as_json)


def read_scheme(path):
    """A QuantScheme from a JSON file (as `softedge plan` writes), or None."""
    if path is None:
        return None
    from toolkit.errors import ArtifactError, ConfigError
    from toolkit.scheme import QuantScheme

    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ArtifactError(f"Cannot read the scheme {path}: {error.strerror or error}") from error
    try:
        return QuantScheme.from_json(text)
    except (ValueError, TypeError, KeyError) as error:
        if isinstance(error, ConfigError):
            raise ConfigError(f"Scheme {path}: {error}") from error
        raise ArtifactError(f"{path} is not a QuantScheme JSON file: {error}") from error


@main.command()
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False),
              help="Your trained float Keras 3 model (.keras).")
@click.option("--data", default="digits", show_default=True,
              help="Calibration samples are drawn from its training split (labels unused): digits, mnist1d, an .npz, "
                   "or a directory of .npz shards.")
@width_options(weight_bits=4)
@click.option("--rounding", type=click.Choice(PtqRounding.names()), default=PtqRounding.ADAROUND.value, show_default=True,
              help="nearest: round each weight to its nearest level; adaround: learn up or down per weight.")
@click.option("--samples", default=512, show_default=True, type=click.IntRange(min=1),
              help="Calibration samples (activation ranges and AdaRound's reconstruction).")
@click.option("--iterations", default=10_000, show_default=True, type=click.IntRange(min=1),
              envvar="SOFTEDGE_PTQ_ITERATIONS", show_envvar=True,
              help="AdaRound iterations per layer.")
@click.option("--scheme", "scheme_path", default=None, type=click.Path(dir_okay=False),
              help="A QuantScheme JSON (per-layer bit widths, e.g. from `softedge plan`); replaces --weight-bits "
                   "and --activation-bits.")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="Run directory to write.")
@click.option("--task", type=click.Choice(Task.names()), default=None,
              help="Default: from the labels.")
@click.option("--overwrite", is_flag=True,
              help="Replace RUN when it holds another run (its exports too); without it such a RUN is refused.")
@seed_option
@json_option
@verbose_option
@handles_errors
def ptq(model_path, data, weight_bits, activation_bits, rounding, samples, iterations, scheme_path, run_dir, task,
        overwrite, seed, as_json, verbose):
    """Quantize a trained float model without training: calibrate, choose steps, round each
    layer's weights to nearest or learn the rounding (AdaRound), layer by layer.

    Writes the same run directory as `softedge train` (float.keras, smooth.keras, config.json,
    history.json with each layer's losses, summary.json); `softedge export --run RUN` exports it.

    \b
    Example: softedge ptq --model runs/m1d/float.keras --data mnist1d --weight-bits 3 --run runs/m1d-ptq3
             softedge export --run runs/m1d-ptq3
    """
    with quiet(Path(run_dir) / LOG_NAME, verbose):
        from app.runs import RunConfig, ptq_run
        from toolkit.ptq import AdaRoundSettings
        from toolkit.scheme import QuantScheme

        set_seed(seed)
        scheme = read_scheme(scheme_path) or QuantScheme(weight_bits=weight_bits, activation_bits=activation_bits)

        def progress(record):
            if as_json:
                return
            if "iteration" in record:
                echo(f"    {record['layer']}: iteration {record['iteration']}/{iterations}, "
                     f"reconstruction {record['loss']:.4g}", err=True)
            else:
                echo(f"  {record['layer']} ({record['position']}/{record['layers']}, {record['bits']} bits, "
                     f"{record['weights']} weights): output error {record['error_nearest']:.3g} nearest, "
                     f"{record['error']:.3g} {rounding}; {record['changed_from_nearest']:.1%} rounded otherwise; "
                     f"{record['seconds']:.1f} s", err=True)

        summary = ptq_run(RunConfig(model_path, data, scheme, seed=seed, task=task), run_dir, rounding, samples,
                          AdaRoundSettings(iterations=iterations), progress=progress, overwrite=overwrite)
        echo_run_summary(summary, f"{rounding}, {summary['seconds']:.0f} s", run_dir, as_json)


@main.command()
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False),
              help="Your trained float Keras 3 model (.keras).")
@click.option("--data", default="digits", show_default=True, help="Calibration samples come from its training split.")
@click.option("--budget-kb", required=True, type=Finite(low=0, low_open=True),
              help="Weight bytes allowed, in KB (1 KB = 1024 bytes); below the model's float32 weight bytes.")
@click.option("--bits", default="2,3,4,8", show_default=True, type=Widths(), help="The widths to choose from (2..8).")
@click.option("--storage", type=click.Choice(["tflite", "bits"]), default="tflite", show_default=True,
              help="tflite: <= 4 bits stored int4-packed, as the .tflite does; bits: b bits per weight.")
@click.option("--samples", default=512, show_default=True, type=click.IntRange(min=1))
@click.option("--output", required=True, type=click.Path(dir_okay=False), help="The QuantScheme JSON to write.")
@seed_option
@json_option
@verbose_option
@handles_errors
def plan(model_path, data, budget_kb, bits, storage, samples, output, seed, as_json, verbose):
    """Choose each layer's weight width under a size budget: measure how much each layer alone
    at each width changes the model's outputs, then pick the widths with the least total change
    whose weight bytes fit (toolkit/plan.py).

    Writes a QuantScheme JSON that `softedge train --scheme` and `softedge ptq --scheme` take,
    and prints the table (layer, weights, bits, sensitivity, bytes).

    \b
    Example: softedge plan --model runs/m1d/float.keras --data mnist1d --budget-kb 4 --output plan.json
             softedge ptq --model runs/m1d/float.keras --data mnist1d --scheme plan.json --run runs/m1d-plan
    """
    with quiet(verbose=verbose):
        from app.runs import plan_run
        from export.atomic import write_text

        set_seed(seed)
        scheme, chosen, sensitivities = plan_run(model_path, data, int(budget_kb * 1024), bits, storage, samples, seed)
        write_text(output, scheme.to_json())
        total = sum(choice.bytes for choice in chosen)
        if as_json:
            echo(json.dumps({"output": output, "budget_bytes": int(budget_kb * 1024), "bytes": total,
                             "layers": [vars(choice) | {"sensitivities": sensitivities[choice.layer]["sensitivity"]}
                                        for choice in chosen]}, indent=2))
        else:
            echo("| layer | weights | bits | sensitivity | bytes |")
            echo("|---|---|---|---|---|")
            for choice in chosen:
                echo(f"| {choice.layer} | {choice.weights} | {choice.bits} | {choice.sensitivity:.3g} | {choice.bytes} |")
            echo(f"{total} of {int(budget_kb * 1024)} bytes; scheme written to {output}")


CONVERTER_TARGET_CHOICE = click.Choice(Target.names(converter_only=True))
KERNEL_CHOICE = click.Choice(KernelFamily.kernel_names())


@main.command(name="export")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="Run directory (softedge train).")
@click.option("--output", type=click.Path(file_okay=False), default=None, help="Default: RUN/export.")
@click.option("--target", type=click.Choice(Target.names()), default=Target.INT8.value, show_default=True,
              help="micro: int8 for TFLite Micro; an op it lacks is an error (exit 4) naming the op.")
@click.option("--io", type=click.Choice(["int8", "float"]), default="int8", show_default=True, help="Input/output type.")
@click.option("--kernels", type=KERNEL_CHOICE, default="xnnpack", show_default=True, help="LiteRT kernels to validate on.")
@click.option("--max-drift", type=Finite(low=0), default=None, help="Fail if a layer drifts more steps than this (>= 0).")
@click.option("--min-agreement", type=Finite(low=0, high=1), default=None,
              help="Fail below this hard/TFLite top-1 agreement (0..1).")
@click.option("--data", default=None, help="Evaluation data (default: the run's dataset).")
@click.option("--device-check/--no-device-check", default=True, show_default=True)
@click.option("--max-arena-kb", type=Finite(low=0), default=None,
              help="Fail (exit 1) if TFLite Micro's tensor arena exceeds this many KB (1 KB = 1024 bytes).")
@click.option("--max-flash-kb", type=Finite(low=0), default=None,
              help="Fail (exit 1) if the model data exceeds this many KB of flash.")
@seed_option
@json_option
@verbose_option
@handles_errors
def export_command(run_dir, output, target, io, kernels, max_drift, min_agreement, data, device_check, max_arena_kb,
                   max_flash_kb, seed, as_json, verbose):
    """Harden, convert, validate, bundle and device-check a trained run (LiteRT and, for int8,
    TFLite Micro).

    Writes OUTPUT/hard.keras, model.tflite, report.json, report.md, drift.png and bundle/
    (bundle/micro/: the C sources for TFLite Micro and its check), and appends what TensorFlow
    and the converter printed to RUN/softedge.log. Exits 1 when a threshold, a
    budget or a device check fails; 4 when --target micro meets an op TFLite Micro lacks.

    \b
    Example: softedge export --run runs/digits_cnn-w8-soft --max-drift 3 --min-agreement 0.999
             softedge export --run runs/ds_cnn-w4 --target micro --max-arena-kb 64 --max-flash-kb 256
    """
    with quiet(Path(run_dir) / LOG_NAME, verbose):
        from app.runs import ExportOptions, export_run

        options = ExportOptions(output, target, io, kernels, max_drift, min_agreement, data, device_check,
                                max_arena_kb, max_flash_kb)
        set_seed(seed)
        if not as_json:
            echo(f"exporting {run_dir} to {target}", err=True)
        report, failures = export_run(run_dir, options,
                                      progress=None if as_json else (lambda stage: echo(f"  {stage} ...", err=True)))
        if as_json:
            echo(report.to_json())
        else:
            echo(report.to_text())
            for failure in failures:
                echo(f"FAILED: {failure}", err=True)
            if failures:
                echo(f"the report is in {report['written_to']}; {output or Path(run_dir) / 'export'} was left as it was",
                     err=True)
    sys.exit(EXIT_CHECK_FAILED if failures else EXIT_OK)


@main.command(name="convert")
@click.argument("model_path", type=click.Path())
@click.option("--output", required=True, type=click.Path(dir_okay=False), help="The .tflite file to write.")
@click.option("--target", type=CONVERTER_TARGET_CHOICE, default=Target.INT8.value, show_default=True)
@click.option("--io", type=click.Choice(["int8", "float"]), default="int8", show_default=True)
@click.option("--data", default=None, help="Representative data for post-training quantization of a float model.")
@seed_option
@json_option
@verbose_option
@handles_errors
def convert_command(model_path, output, target, io, data, seed, as_json, verbose):
    """Convert a saved Keras model to TFLite.

    A softedge quantized model is hardened first; a hard model converts as is; any other Keras
    model (or a SavedModel directory) gets post-training quantization from --data for int8.

    \b
    Example: softedge convert runs/x/float.keras --data digits --output float-ptq.tflite
    """
    with quiet(verbose=verbose):
        from export.atomic import write_bytes
        from export.convert_any import convert_path
        from export.drift_report import float_ops_warning
        from export.float_layers import float_ops

        set_seed(seed)
        tflite_bytes, kind = convert_path(model_path, target, io, data)
        write_bytes(output, tflite_bytes)
        floats = float_ops(tflite_bytes) if Target(target).integer else []
        result = {"output": output, "bytes": len(tflite_bytes), "target": target, "model_kind": kind, "float_ops": floats}
        if as_json:
            echo(json.dumps(result, indent=2))
        else:
            echo(f"wrote {output} ({len(tflite_bytes)} bytes, {kind} model, {target})")
            if floats:
                echo(float_ops_warning(floats))


@main.command(name="validate")
@click.option("--hard", "hard_path", required=True, type=click.Path(), help="hard.keras (export.harden output).")
@click.option("--tflite", "tflite_path", required=True, type=click.Path(), help="The .tflite to validate.")
@click.option("--data", required=True, help="digits, mnist1d or an .npz (its test split is used).")
@click.option("--smooth", "smooth_path", default=None, type=click.Path(), help="Optional smooth.keras.")
@click.option("--output", default=None, type=click.Path(file_okay=False), help="Write report.json/.md/.png here.")
@click.option("--kernels", type=KERNEL_CHOICE, default="xnnpack", show_default=True)
@click.option("--max-drift", type=Finite(low=0), default=None, help="Fail if a layer drifts more steps than this (>= 0).")
@click.option("--min-agreement", type=Finite(low=0, high=1), default=None,
              help="Fail below this hard/TFLite top-1 agreement (0..1).")
@task_option
@seed_option
@json_option
@verbose_option
@handles_errors
def validate_command(hard_path, tflite_path, data, smooth_path, output, kernels, max_drift, min_agreement, task, seed,
                     as_json, verbose):
    """Measure the drift smooth Keras -> hard Keras -> integer reference -> TFLite on a test split.

    Checks that LiteRT computes exactly the integer reference's integers (every kernel family;
    `reference` in --json). Exits 1 when they differ on --kernels, or when --max-drift or
    --min-agreement is broken, naming the worst layer.

    \b
    Example: softedge validate --hard runs/x/export/hard.keras --tflite runs/x/export/model.tflite --data digits
    """
    with quiet(verbose=verbose):
        from export.validate import validate_files, write_report

        set_seed(seed)
        report, failures = validate_files(hard_path, tflite_path, data, smooth_path, kernels, task, max_drift,
                                          min_agreement)
        if output:
            write_report(report, output)
        echo(report.to_json() if as_json else report.to_text())
        for failure in failures:
            echo(f"FAILED: {failure}", err=True)
    sys.exit(EXIT_CHECK_FAILED if failures else EXIT_OK)


@main.command(name="device-check")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--arm64", is_flag=True,
              help="Run the check on an emulated ARM64 device (QEMU user mode; build it once with make arm64).")
@click.option("--cpu", "cpus", type=Choices(ARM64_CPUS), default=",".join(ARM64_DEFAULT_CPUS), show_default=True,
              help="With --arm64: the ARM CPU models to emulate, comma-separated.")
@seed_option
@json_option
@verbose_option
@handles_errors
def device_check_command(bundle, arm64, cpus, seed, as_json, verbose):
    """Run a bundle's own check.py as a device would: on this machine, or with --arm64 on
    emulated ARM64 CPUs (the integers are the device's; the timings are not).

    Exits 1 when a device matches no kernel family's integers or misses the bundle's tolerance.

    \b
    Example: softedge device-check runs/digits_cnn-w8-soft/export/bundle --arm64 --cpu cortex-a53,cortex-a72
    """
    bundle = Path(bundle)
    from export.device.check import read_bundle

    read_bundle(str(bundle))   # every file present and sealed (BundleError: exit 3), before any device runs
    with quiet(verbose=verbose):
        if arm64:
            from app.arm64 import run_check

            results = {cpu: run_check(bundle, cpu) for cpu in cpus}
        else:
            from app.runs import run_device_check

            results = {platform.machine(): run_device_check(bundle)}
        if as_json:
            echo(json.dumps(results, indent=2))
        else:
            for device, result in results.items():
                echo(format_device_line(device, result))
    sys.exit(EXIT_OK if all(result.get("ok") for result in results.values()) else EXIT_CHECK_FAILED)


def format_device_line(device: str, result: dict) -> str:
    """One line of a device check: the family the device's integers match, accuracy, verdict."""
    if "matches" not in result:
        return f"{device:12} FAILED: {'; '.join(result.get('failures', []))}"
    differing = ", ".join(f"{family} {count}" for family, count in result["families"].items())
    metric = (f", accuracy {result['accuracy']:.4f}" if result.get("accuracy") is not None else "") + \
        (f", ROC AUC {result['auc']:.4f}" if result.get("auc") is not None else "")
    expected = result.get("expected_family")
    expected = f", which on {result.get('machine')} compute {expected}" if expected else ""
    return (f"{device:12} {result['kernels']} kernels{expected}: matches {', '.join(result['matches']) or 'no family'} "
            f"(differing elements: {differing}){metric} -> {'OK' if result['ok'] else 'FAILED'}")


def format_gradcheck_table(results) -> str:
    """A markdown table of `GradcheckResult`s."""
    lines = [
        "| method | alpha | max error d/dx | max error d/dalpha | max abs d/dx |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        alpha = "-" if r.alpha is None else f"{r.alpha:g}"
        err_alpha = "-" if r.max_error_alpha is None else f"{r.max_error_alpha:.1e}"
        lines.append(f"| {r.method} | {alpha} | {r.max_error_x:.1e} | {err_alpha} | {r.max_abs_grad_x:.3f} |")
    return "\n".join(lines)
