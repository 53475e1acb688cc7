"""The `softedge` command line: a thin click layer over library functions.

Exit codes (every command):
    0  success
    1  a check failed (drift or agreement beyond its threshold, device check out of tolerance)
    2  bad usage or invalid input (click's own usage errors, ConfigError)
    3  a file could not be read, was refused or could not be written (ArtifactError)
    4  a layer softedge cannot quantize (UnsupportedLayerError)
"""

from __future__ import annotations

import functools
import json
import os
import sys

import click

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_ARTIFACT, EXIT_UNSUPPORTED = 0, 1, 2, 3, 4


def _exit_code(error: Exception) -> int:
    from toolkit.errors import ArtifactError, UnsupportedLayerError

    if isinstance(error, ArtifactError):
        return EXIT_ARTIFACT
    if isinstance(error, UnsupportedLayerError):
        return EXIT_UNSUPPORTED
    return EXIT_USAGE


def handles_errors(command):
    """Turns any SoftedgeError into `Error: <message>` on stderr and its exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from toolkit.errors import SoftedgeError

        try:
            return command(*args, **kwargs)
        except SoftedgeError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(_exit_code(error))

    return wrapper


def seed_option(command):
    return click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")(command)


def json_option(command):
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(command)


def set_seed(seed: int) -> None:
    import keras

    keras.utils.set_random_seed(seed)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="softedge")
def main():
    """softedge: differentiable rounding, quantization-aware training, exact TFLite export."""


@main.command()
@click.option(
    "--alphas",
    default="0,0.5,1,2,5,10,20",
    show_default=True,
    help="Comma-separated sharpness values for the soft methods.",
)
@click.option("--eps", default=1e-6, show_default=True, type=float, help="Finite-difference step.")
@click.option("--tolerance", default=1e-5, show_default=True, type=float, help="Max scaled error.")
@seed_option
@json_option
@handles_errors
def gradcheck(alphas, eps, tolerance, seed, as_json):
    """Check every rounding method's analytic gradient against finite differences.

    Differentiates each method's smooth surrogate numerically (identity for ste, the curve for
    soft/sigmoid) and prints the max scaled error; exits 1 if any exceeds --tolerance.

    Example: softedge gradcheck --alphas 0,1,5 --json
    """
    from toolkit.errors import ConfigError
    from toolkit.gradcheck import gradcheck_table

    set_seed(seed)
    try:
        alpha_values = tuple(float(a) for a in alphas.split(",") if a.strip())
    except ValueError:
        raise ConfigError(f"Expected comma-separated numbers for --alphas. Received: {alphas!r}") from None
    results = gradcheck_table(alpha_values, eps=eps)
    worst = max(max(r.max_error_x, r.max_error_alpha or 0.0) for r in results)
    if as_json:
        click.echo(json.dumps({"results": [r.to_dict() for r in results], "max_error": worst}, indent=2))
    else:
        click.echo(format_gradcheck_table(results))
    sys.exit(EXIT_OK if worst <= tolerance else EXIT_CHECK_FAILED)


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
