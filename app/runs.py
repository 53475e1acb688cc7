"""Run directories: `train_run` trains into one (`ptq_run` quantizes a trained float model into
one, post-training), `export_run` exports from one.

    RUN/
      config.json     model, data, scheme, recipe, seed
      versions.json   package versions
      float.keras     the float model after pre-training
      smooth.keras    the quantized model with its (annealed) soft rounding
      history.json    both training phases, with the alpha column
      summary.json    test metrics, workers, seconds per epoch
      softedge.log    what TensorFlow printed (the CLI)
      checkpoint/     while training: the state after the last epoch (`app.checkpoints`)
      worker-<i>/     with several workers: worker i's own copy of the run (the chief writes RUN)
      export/         hard.keras, model.tflite, report.json/.md, drift.png, bundle/, device.json

Every file is written atomically.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras

from app.bundle_checks import run_bundle_check
from app.checkpoints import CHECKPOINT_DIR, EpochTimes, RunCheckpoints, merge_history
from app.ownership import claim_run, data_fingerprint, ensure_writable, run_lock
from export.artifacts import load_keras_model, save_keras_model, versions
from export.atomic import replace_directory, staging_directory, write_bytes, write_json
from export.bundle import write_bundle
from export.device.check import load_interpreter, quantize_input
from export.device.families import KernelFamily
from export.harden import harden
from export.micro import budget_failures, micro_stage, require_micro_ops
from export.preflight import check_model_finite
from export.targets import Target
from export.tflite import convert
from export.validate import agreement, check, non_finite_failures, validate, write_report
from models import datasets, registry
from models.data_checks import check_dataset, check_dataset_for_model, zoo_adaptation
from models.training import Recipe, evaluate, learned_step_for, train_float, train_quantized
from toolkit.distribute import is_multi_worker, worker_role
from toolkit.errors import ArtifactError, ConfigError
from toolkit.plan import choose_widths, layer_sensitivities, planned_scheme
from toolkit.ptq import AdaRoundSettings, post_training_rounding, ptq_scheme
from toolkit.rewrite import check_scheme_fits, quantize
from toolkit.rounding import HARD_ALPHA
from toolkit.schedules import set_alpha
from toolkit.scheme import QuantScheme

__all__ = ["ExportOptions", "RunConfig", "export_run", "plan_run", "ptq_run", "read_config",
           "train_run"]


@dataclass
class RunConfig:
    """`model`: a zoo name, or a path to a user's trained float .keras (float training skipped).
    `task`: classification, regression or anomaly; None takes it from the data set (a zoo
    model's synthetic data says it) or the labels."""

    model: str = "digits_cnn"
    data: str = "digits"
    scheme: QuantScheme = field(default_factory=QuantScheme)
    recipe: Recipe = field(default_factory=Recipe)
    seed: int = 0
    task: str | None = None

    def to_dict(self) -> dict:
        return {"model": self.model, "data": self.data, "scheme": self.scheme.to_dict(),
                "recipe": self.recipe.to_dict(), "seed": self.seed, "task": self.task}

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        """A config as `to_dict` wrote it; a recipe written before the device-arithmetic fields
        existed trained on the float simulation throughout, and reads back so (a resume compares
        the checkpoint's config with the command's: `app.checkpoints.config_differences`)."""
        recipe = {"device_arithmetic": None, "device_epochs": None, **data["recipe"]}
        return cls(model=data["model"], data=data["data"], scheme=QuantScheme.from_dict(data["scheme"]),
                   recipe=Recipe(**recipe), seed=int(data["seed"]), task=data.get("task"))

    @property
    def user_model(self) -> bool:
        return self.model.endswith(".keras")

    def dataset(self, name: str | None = None) -> datasets.Dataset:
        """The run's data set (or `name`); "synthetic" is generated for the run's zoo model."""
        return datasets.load(name or self.data, model=None if self.user_model else self.model)

    def resolve_task(self, data: datasets.Dataset) -> str:
        """The given task, else the data set's, else the zoo model's, else from the labels."""
        if self.task or data.task:
            return datasets.infer_task(data.y_train, self.task or data.task)
        if not self.user_model and registry.entry(self.model).task != "classification":
            return registry.entry(self.model).task
        return datasets.infer_task(data.y_train)


def read_config(run_dir) -> RunConfig:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist: is {run_dir} a run directory made by `softedge train`?")
    try:
        return RunConfig.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ArtifactError(f"{path} is not a valid run config: {error}") from error


def check_run_data(config: RunConfig, data: datasets.Dataset, task: str, user_model: keras.Model | None = None,
                   splits=("train", "test"), qat: bool = True) -> str | None:
    """The boundary check of a run's data (`models.data_checks`) before anything is written;
    returns the note saying what a zoo model is rebuilt for, if anything."""
    recipe = config.recipe
    steps = (recipe.batch_size, recipe.qat_epochs) if qat else None
    if user_model is not None:
        check_dataset_for_model(data, task, user_model, splits=splits, min_train_steps=steps)
        check_scheme_fits(user_model, config.scheme)
        return None
    zoo_model = registry.entry(config.model)
    if task != zoo_model.task:
        raise ConfigError(f"Zoo model {config.model!r} is made for {zoo_model.task}; dataset {data.name!r} has "
                          f"{task} targets.")
    check_dataset(data, task, splits=splits, min_train_steps=steps)
    note = zoo_adaptation(zoo_model, data)
    check_scheme_fits(registry.build(config.model, data.input_shape, data.num_classes), config.scheme)
    return note


def train_run(config: RunConfig, run_dir, callbacks=(), float_callbacks=(), strategy=None, resume: bool = False,
              overwrite: bool = False, notify=None) -> dict:
    """Float pre-training, quantization and annealed fine-tuning into `run_dir`; returns a summary.

    `float_callbacks` / `callbacks`: extra Keras callbacks for the float and QAT phases.
    `strategy`: a tf.distribute strategy (`toolkit.distribute.strategy_named`) to train under;
    with several workers, each runs this function, the chief writes `run_dir` and worker i its
    own copy in `run_dir`/worker-i (every worker must save too: reading some distributed
    variables is a collective step). The run saves a checkpoint after every epoch
    (`app.checkpoints`); `resume` continues from it, to the result an uninterrupted run has.

    Before anything is written the data set is checked against the model and the recipe
    (`check_run_data`), and `run_dir` is claimed (`app.ownership.claim_run`): a directory
    holding another run is refused unless `overwrite`, and restored whole if this run fails or is
    interrupted. `notify(text)`: told what a zoo model is rebuilt for.
    """
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    role = worker_role(strategy)
    run_dir = Path(run_dir) if role.chief else Path(run_dir) / f"worker-{role.index}"
    data = config.dataset()
    task = config.resolve_task(data)
    user_model = load_keras_model(config.model) if config.user_model else None
    note = check_run_data(config, data, task, user_model)
    if note and notify:
        notify(note)
    config = dataclasses.replace(config, task=task)  # the resolved task, so export need not guess it
    wanted = {**config.to_dict(), "data_sha256": data_fingerprint(data)}
    if resume and RunCheckpoints(run_dir / CHECKPOINT_DIR, config.to_dict()).load() is None:
        raise ConfigError(f"--resume: {run_dir} has no checkpoint to resume from"
                          + (" (the run finished; see summary.json)." if (run_dir / "summary.json").is_file() else "."))
    with claim_run(run_dir, wanted, overwrite and not resume), run_lock(run_dir, "train"):
        write_json(run_dir / "config.json", wanted)
        return _train_run(config, data, task, run_dir, role, strategy, callbacks, float_callbacks, resume)


def _train_run(config, data, task, run_dir, role, strategy, callbacks, float_callbacks, resume) -> dict:
    checkpoints = RunCheckpoints(run_dir / CHECKPOINT_DIR, config.to_dict())
    if resume:
        checkpoints.load()
    else:
        checkpoints.clear()
    resumed_from = {key: checkpoints.state[key] for key in ("phase", "epochs_done")} if checkpoints.state else None
    float_times, qat_times = EpochTimes(), EpochTimes()
    keras.utils.set_random_seed(config.seed)  # before building: the initial weights come from it
    with strategy.scope():
        if checkpoints.phase_finished("float"):
            model = load_keras_model(run_dir / "float.keras")
            float_history = checkpoints.history("float")
        elif config.user_model:  # a trained float model: quantize and fine-tune it, no float training
            model = load_keras_model(config.model)
            float_history = {}
        else:
            model = registry.build(config.model, data.input_shape, data.num_classes)
            earlier = checkpoints.history("float")
            later = train_float(model, data, config.recipe, seed=config.seed, task=task,
                                callbacks=[*float_callbacks, float_times, checkpoints.saver("float", earlier)],
                                initial_epoch=checkpoints.epochs_done("float"), restore=checkpoints.restorer("float"))
            float_history = merge_history(earlier, later)
        if not checkpoints.phase_finished("float"):
            save_keras_model(model, run_dir / "float.keras")
            checkpoints.save("qat", 0, {"float": float_history, "qat": {}})
        earlier = checkpoints.history("qat")
        smooth, later = train_quantized(model, data, config.scheme, config.recipe, seed=config.seed, task=task,
                                        callbacks=[*callbacks, qat_times,
                                                   checkpoints.saver("qat", earlier, {"float": float_history})],
                                        initial_epoch=checkpoints.epochs_done("qat"), restore=checkpoints.restorer("qat"))
        qat_history = merge_history(earlier, later)
        save_keras_model(smooth, run_dir / "smooth.keras")
    if is_multi_worker(strategy):  # predict would split the test set across the workers: evaluate local copies
        model, smooth = load_keras_model(run_dir / "float.keras"), load_keras_model(run_dir / "smooth.keras")
    check_model_finite(smooth, f"training diverged: model {smooth.name!r}")
    float_metrics = evaluate(model, data.x_test, data.y_test, task)
    smooth_metrics = evaluate(smooth, data.x_test, data.y_test, task)
    write_json(run_dir / "versions.json", versions())
    history = {"float": float_history, "qat": qat_history}
    write_json(run_dir / "history.json", json.loads(json.dumps(history, default=float)))
    summary = {"run": str(run_dir), "task": task, **{f"float_{k}": v for k, v in float_metrics.items()},
               **{f"smooth_{k}": v for k, v in smooth_metrics.items()}, "final_alpha": qat_history["alpha"][-1],
               "ended_hard": config.recipe.end_hard,
               "workers": role.count, "replicas": strategy.num_replicas_in_sync,
               "seconds_per_epoch": {"float": float_times.median(), "qat": qat_times.median()},
               "resumed_from": resumed_from}
    write_json(run_dir / "summary.json", summary)
    checkpoints.clear()
    return summary


def ptq_run(config: RunConfig, run_dir, rounding: str = "adaround", samples: int = 512,
            settings: AdaRoundSettings | None = None, progress=None, overwrite: bool = False) -> dict:
    """Post-training quantization of a trained float model (`config.model`, a .keras path) into
    `run_dir`, the run directory `export_run` reads: activation ranges calibrated on `samples`
    training samples (drawn with the seed), MSE steps, kernels rounded to nearest or learned
    (AdaRound), layer by layer (`toolkit.ptq`). No labels are used. `progress(record)`: per
    layer and every 1000 AdaRound iterations. Returns the summary."""
    if not config.user_model:
        raise ConfigError(f"softedge ptq quantizes a trained float model: --model must be a .keras file. Received: "
                          f"{config.model!r}")
    if samples < 1:
        raise ConfigError(f"Expected --samples >= 1. Received: {samples}")
    run_dir = Path(run_dir)
    start = time.perf_counter()
    data = config.dataset()
    task = config.resolve_task(data)
    float_model = load_keras_model(config.model)
    check_run_data(config, data, task, float_model, qat=False)
    check_model_finite(float_model)
    scheme = ptq_scheme(config.scheme)
    ptq = {"rounding": rounding, "samples": min(samples, len(data.x_train)),
           "adaround": (settings or AdaRoundSettings()).to_dict()}
    config = dataclasses.replace(config, task=task, scheme=scheme)
    wanted = {**config.to_dict(), "ptq": ptq, "data_sha256": data_fingerprint(data)}
    with claim_run(run_dir, wanted, overwrite), run_lock(run_dir, "ptq"):
        write_json(run_dir / "config.json", wanted)
        return _ptq_run(config, data, task, float_model, run_dir, rounding, samples, settings, progress, start)


def _ptq_run(config, data, task, float_model, run_dir, rounding, samples, settings, progress, start) -> dict:
    x = datasets.calibration_samples(data, samples, config.seed)
    keras.utils.set_random_seed(config.seed)
    quantized = quantize(float_model, config.scheme, calibration_data=x)
    records = post_training_rounding(float_model, quantized, x, rounding, settings, seed=config.seed, progress=progress)
    float_metrics = evaluate(float_model, data.x_test, data.y_test, task)
    quantized_metrics = evaluate(quantized, data.x_test, data.y_test, task)
    write_json(run_dir / "versions.json", versions())
    save_keras_model(float_model, run_dir / "float.keras")
    save_keras_model(quantized, run_dir / "smooth.keras")
    write_json(run_dir / "history.json", json.loads(json.dumps({"ptq": records}, default=float)))
    summary = {"run": str(run_dir), "task": task, "method": f"ptq-{rounding}",
               **{f"float_{k}": v for k, v in float_metrics.items()},
               **{f"smooth_{k}": v for k, v in quantized_metrics.items()},
               "layers": [{key: record[key] for key in ("layer", "bits", "weights", "error_nearest", "error",
                                                        "changed_from_nearest", "seconds")} for record in records],
               "seconds": time.perf_counter() - start}
    write_json(run_dir / "summary.json", summary)
    return summary


def plan_run(model_path, data_name: str, budget_bytes: int, bits=(2, 3, 4, 8), storage: str = "tflite",
             samples: int = 512, seed: int = 0) -> tuple[QuantScheme, list, dict]:
    """`softedge plan`: per-layer sensitivities of a trained float model on `samples` training
    inputs, and the widths that fit `budget_bytes` (`toolkit.plan`); the scheme also learns the
    steps of 2-bit layers, as `softedge train` does at 2 bits (`learned_step_for`). Returns (the
    scheme, the choices, the sensitivities)."""
    if not (isinstance(budget_bytes, int) and budget_bytes > 0):
        raise ConfigError(f"Expected a budget of at least one byte. Received: {budget_bytes!r} bytes")
    float_model = load_keras_model(model_path)
    data = datasets.load(data_name)
    task = datasets.infer_task(data.y_train)
    check_dataset_for_model(data, task, float_model, splits=("train",))
    check_model_finite(float_model)
    float_bytes = 4 * float_model.count_params()
    if budget_bytes >= float_bytes:
        raise ConfigError(f"--budget-kb {budget_bytes / 1024:g} is not below model {float_model.name!r}'s float32 "
                          f"size ({float_bytes} bytes = {float_bytes / 1024:g} KB): there is nothing to plan.")
    sensitivities = layer_sensitivities(float_model, datasets.calibration_samples(data, samples, seed), bits)
    chosen = choose_widths(sensitivities, budget_bytes, storage)
    return planned_scheme(chosen, learned_step=learned_step_for), chosen, sensitivities


FAILED_SUFFIX = ".failed"  # where an export whose checks failed leaves its report


@dataclass(frozen=True)
class ExportOptions:
    """What `export_run` builds and checks (the `softedge export` options).

    output: the export directory (default RUN/export). target: a `Target`; "micro" is int8, and
    an op TFLite Micro lacks is then an error (UnsupportedOnMicroError) rather than a report
    line. io: "int8" or "float" model inputs and outputs. kernels: the LiteRT `KernelFamily`
    validation and the bundle run on. max_drift / min_agreement: the gates (None: not checked).
    data: the evaluation data (default: the run's). device_check: run the bundle's own checks.
    max_arena_kb / max_flash_kb: budgets for TFLite Micro's tensor arena and the model data,
    which apply to integer targets only."""

    output: Path | None = None
    target: Target = Target.INT8
    io: str = "int8"
    kernels: KernelFamily = KernelFamily.XNNPACK
    max_drift: float | None = None
    min_agreement: float | None = None
    data: str | None = None
    device_check: bool = True
    max_arena_kb: float | None = None
    max_flash_kb: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "target", Target(self.target))
        object.__setattr__(self, "kernels", KernelFamily(self.kernels))
        if self.output is not None:
            object.__setattr__(self, "output", Path(self.output))
        if (self.max_arena_kb is not None or self.max_flash_kb is not None) and not self.target.integer:
            integer = ", ".join(t.value for t in Target if t.integer)
            raise ConfigError(f"--max-arena-kb / --max-flash-kb apply to TFLite Micro, which runs integer models "
                              f"({integer}); target {self.target.value!r} is not one.")

    @property
    def budgets(self) -> bool:
        return self.max_arena_kb is not None or self.max_flash_kb is not None


def export_run(run_dir, options: ExportOptions | None = None, progress=None) -> tuple[dict, list[str]]:
    """harden + convert + validate + bundle (+ device checks: LiteRT, TFLite Micro) of a run;
    returns (report, failures).

    A transaction: everything is built in a temporary directory beside OUTPUT (default
    RUN/export), which replaces OUTPUT whole only when every check passed. When a check fails,
    the report and what was built go to OUTPUT.failed instead and OUTPUT stays as it was; an
    error or an interrupt (Ctrl-C, SIGTERM) leaves both as they were. RUN is locked meanwhile
    (`app.ownership.run_lock`). `report["written_to"]` says where it went.

    `options` (`ExportOptions`) say what to build and check; `progress(stage)` is called as each
    stage starts."""
    options = options or ExportOptions()
    stage = progress or (lambda _: None)
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    output = options.output if options.output is not None else run_dir / "export"
    smooth = load_keras_model(run_dir / "smooth.keras")
    dataset = config.dataset(options.data)
    task = config.resolve_task(dataset)
    check_dataset_for_model(dataset, task, smooth, splits=("test",))
    check_model_finite(smooth)
    ensure_writable(output.parent)
    with run_lock(run_dir, "export"):
        staged = staging_directory(output)
        try:
            report, failures = _export_into(staged, run_dir, config, smooth, dataset, task, options, stage)
            destination = output if not failures else output.with_name(output.name + FAILED_SUFFIX)
            report.written_to = str(destination)
            write_report(report, staged)
            replace_directory(staged, destination)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
    return report, failures


def _export_into(output: Path, run_dir: Path, config: RunConfig, smooth, dataset, task,
                 options: ExportOptions, stage) -> tuple[dict, list[str]]:
    stage("hardening")
    hard = harden(smooth)
    target, conversion_target = options.target, options.target.converter_target
    stage(f"converting to {conversion_target} TFLite")
    micro_bytes, micro_error = None, None
    if conversion_target.integer:  # the batch-1 form a microcontroller runs
        try:
            micro_bytes = convert(hard, conversion_target, options.io, batch_size=1)
        except ConfigError as error:
            if target is Target.MICRO or options.budgets:
                raise
            micro_error = f"no batch-1 model for TFLite Micro: {error}"  # LiteRT's export goes on
        if target is Target.MICRO:
            require_micro_ops(micro_bytes, f"model {hard.name!r}")
    tflite_bytes = convert(hard, conversion_target, options.io)
    stage(f"validating on {dataset.name}'s {len(dataset.x_test)} test samples (LiteRT and the integer reference)")
    report = validate(hard, tflite_bytes, dataset.x_test, dataset.y_test, smooth_model=smooth, kernels=options.kernels,
                      task=task)
    float_model = load_keras_model(run_dir / "float.keras")
    report.float_tflite_bytes = len(convert(float_model, Target.FLOAT32))
    report.target = target.value
    report.scheme = config.scheme.to_dict()
    report.float = evaluate(float_model, dataset.x_test, dataset.y_test, report.task)
    if report.task == "classification":
        report.float_accuracy = report.float["accuracy"]
        set_alpha(smooth, HARD_ALPHA)  # the smooth model judged as hard rounding: a check of harden itself
        report.harden_agreement_with_alpha_inf = agreement(smooth.predict(dataset.x_test, verbose=0),
                                                           hard.predict(dataset.x_test, verbose=0))
    micro_part = None
    if micro_error is not None:
        report.micro = {"runs": False, "ops": [], "error": micro_error}
    if micro_bytes is not None:
        stage("TFLite Micro: ops and arena")
        sample = quantize_input(dataset.x_test[:1], load_interpreter(tflite_bytes, "builtin").get_input_details()[0])[0]
        report.micro, micro_part = micro_stage(micro_bytes, hard.name, sample)
    stage("writing the export")
    save_keras_model(hard, output / "hard.keras")
    write_bytes(output / "model.tflite", tflite_bytes)
    write_bundle(output / "bundle", tflite_bytes, dataset.x_test, dataset.y_test, kernels=options.kernels,
                 task=report.task, extra={"run": str(run_dir), "target": target.value}, micro=micro_part)
    failures = check(report, options.max_drift, options.min_agreement)
    if options.device_check:
        stage("device check (bundle/check.py, LiteRT)")
        report.device = run_device_check(output / "bundle")
        failures += [f"device check: {message}" for message in report.device.get("failures", [])]
        if micro_part is not None and report.micro.get("runs"):
            stage("device check (bundle/micro/check.py, TFLite Micro)")
            report.micro.update(run_micro_check(output / "bundle"))
            failures += [f"TFLite Micro check: {message}" for message in report.micro.get("failures", [])]
    if report.micro is not None:
        failures += budget_failures(report.micro, options.max_arena_kb, options.max_flash_kb)
    failures += non_finite_failures(report)
    report.failures = failures
    return report, failures


def run_device_check(bundle, script: str = "check.py") -> dict:
    """Runs one of the bundle's own checks (check.py: LiteRT; micro/check.py: TFLite Micro) in a
    fresh interpreter, as a device would."""
    bundle = Path(bundle)
    return run_bundle_check([sys.executable, bundle / script, bundle, "--json"])


def run_micro_check(bundle) -> dict:
    """The bundle's TFLite Micro check (micro/check.py), run as a device user runs it."""
    return run_device_check(bundle, str(Path("micro") / "check.py"))

