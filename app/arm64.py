"""An ARM64 device on this x86-64 machine: QEMU user-mode emulation of an arm64 Debian Python
running LiteRT's aarch64 wheel, for a bundle's own `check.py`.

    python -m app.arm64              # builds .arm64/ once (make arm64); a second run does nothing
    softedge device-check BUNDLE --arm64 --cpu cortex-a53,cortex-a72
    run_tensors({name: (tflite_bytes, inputs)}, "builtin", "cortex-a76")   # every tensor LiteRT computes there

What `build` puts in `.arm64/` (git-ignored), all from the package archives this machine reaches:
- `sysroot/`: Debian bookworm's arm64 `python3.11`, `libstdc++6` and `libgcc-s1` with their
  dependencies, resolved and downloaded by apt in a sandbox of its own (its own sources list,
  state and cache under `.arm64/apt/`: the machine's apt configuration is not touched) and
  unpacked with `dpkg-deb -x`;
- `qemu/`: Debian's `qemu-user-static` for this machine, unpacked (nothing is installed);
- `site/`: PyPI's aarch64 wheels of numpy and of the ai-edge-litert this project runs.

Emulation executes the ARM instructions a device executes, so the integers it computes are the
device's; its timings are not (each instruction is translated). Each CPU model gets a file tree
of its own under `devices/` (the sysroot linked, and a `/proc/cpuinfo` naming that core and its
features), because the kernels' CPU detection (cpuinfo) reads it: with the host's x86 one it
crashed LiteRT while the interpreter loaded; and with one shared file, two devices emulated at
once would read each other's.
QEMU's own `max` model is left out: under QEMU 7.2 it made LiteRT compute wrong integers (3,574
of 3,600 outputs of a digits_cnn bundle, where every named model computed the expected ones).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import numpy as np

from app.bundle_checks import run_bundle_check
from toolkit.errors import ArtifactError, ConfigError

__all__ = ["CPUS", "DEFAULT_CPUS", "ROOT", "build", "is_built", "run_check", "run_tensors"]

ROOT = Path(__file__).resolve().parents[1] / ".arm64"
# QEMU's CPU models and the (implementer, part) their /proc/cpuinfo shows on a device.
CPUS = {"cortex-a35": ("0x41", "0xd04"), "cortex-a53": ("0x41", "0xd03"), "cortex-a57": ("0x41", "0xd07"),
        "cortex-a72": ("0x41", "0xd08"), "cortex-a76": ("0x41", "0xd0b"), "neoverse-n1": ("0x41", "0xd0c"),
        "a64fx": ("0x46", "0x001")}
# The Features line of their /proc/cpuinfo (what QEMU's model reports in HWCAP: dot product on
# the Armv8.2 cores, SVE on A64FX).
_ARMV8_0 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
_ARMV8_2 = _ARMV8_0 + " atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp"
FEATURES = {"cortex-a35": _ARMV8_0, "cortex-a53": _ARMV8_0, "cortex-a57": _ARMV8_0, "cortex-a72": _ARMV8_0,
            "cortex-a76": _ARMV8_2, "neoverse-n1": _ARMV8_2, "a64fx": _ARMV8_0 + " atomics fphp asimdhp asimdrdm sve"}
DEFAULT_CPUS = ("cortex-a53", "cortex-a72", "cortex-a76", "neoverse-n1")
DEBIAN = "http://deb.debian.org/debian"
SUITE = "bookworm"
PACKAGES = ("python3.11", "libstdc++6", "libgcc-s1")
_PYTHON = "usr/bin/python3.11"
_STAMP = ".built"


def is_built(root: Path = ROOT) -> bool:
    return (Path(root) / _STAMP).exists()


def _run(command, doing: str = "building the ARM64 device", **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise ArtifactError(f"{Path(str(command[0])).name} failed ({result.returncode}) {doing}: {tail[0]}")
    return result


def _apt_options(apt: Path, architecture: str) -> list[str]:
    return [f"-o Dir::State={apt}/state", f"-o Dir::State::status={apt}/status", f"-o Dir::Cache={apt}/cache",
            f"-o Dir::Etc::SourceList={apt}/sources.list", "-o Dir::Etc::SourceParts=/dev/null",
            f"-o APT::Architecture={architecture}", f"-o APT::Architectures::={architecture}", "-o Debug::NoLocking=1"]


def _download_debs(apt: Path, architecture: str, packages) -> list[Path]:
    """The .deb files of `packages` and everything they depend on, for `architecture`, fetched
    by apt into a sandbox of its own (`apt`)."""
    for directory in ("state/lists/partial", "cache/archives/partial"):
        (apt / directory).mkdir(parents=True, exist_ok=True)
    (apt / "status").touch()
    (apt / "sources.list").write_text(f"deb [arch={architecture} signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
                                      f"{DEBIAN} {SUITE} main\n")
    options = " ".join(_apt_options(apt, architecture)).split()
    _run(["apt-get", *options, "update"])
    _run(["apt-get", *options, "install", "-y", "--download-only", "--no-install-recommends", *packages])
    return sorted((apt / "cache" / "archives").glob("*.deb"))


def _unpack(debs, destination: Path) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        _run(["dpkg-deb", "-x", deb, destination])


def _wheels(site: Path) -> None:
    """PyPI's aarch64 wheels of numpy and of this project's ai-edge-litert, for CPython 3.11."""
    platforms = [f"--platform=manylinux_2_{minor}_aarch64" for minor in (17, 27, 28, 31, 34, 35, 36)]
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--target", site, *platforms,
          "--platform=manylinux2014_aarch64", "--python-version=3.11", "--implementation=cp", "--only-binary=:all:",
          "numpy>=1.26,<3", f"ai-edge-litert=={version('ai-edge-litert')}"])


def build(root: Path = ROOT, say=print) -> Path:
    """Builds the ARM64 device in `root` (see the module docstring), replacing a partial one;
    does nothing when it is built. Returns `root`."""
    root = Path(root)
    if is_built(root):
        say(f"{root} is built")
        return root
    if platform.machine().lower() not in ("x86_64", "amd64"):
        raise ConfigError(f"The ARM64 emulation is built on x86-64 hosts; this one is {platform.machine()}.")
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise ConfigError(f"Building the ARM64 device needs Debian's {tool}, which this machine lacks.")
    staging = root.with_name(root.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    say("arm64 Python (Debian) ...")
    _unpack(_download_debs(staging / "apt", "arm64", PACKAGES), staging / "sysroot")
    say("QEMU user mode (Debian) ...")
    host = "amd64"
    _unpack(_download_debs(staging / "apt-host", host, ["qemu-user-static"]), staging / "qemu")
    say("numpy and ai-edge-litert aarch64 wheels (PyPI) ...")
    _wheels(staging / "site")
    shutil.rmtree(staging / "apt", ignore_errors=True)
    shutil.rmtree(staging / "apt-host", ignore_errors=True)
    prefix, environment = _emulation(staging, "cortex-a53")  # the wheels import on the emulated device
    _run([*prefix, "-c", "import numpy, ai_edge_litert.interpreter"], env=environment, timeout=600)
    (staging / _STAMP).write_text(json.dumps({"packages": PACKAGES, "ai_edge_litert": version("ai-edge-litert")}))
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)
    say(f"{root} is built")
    return root


def _cpuinfo(cpu: str, cores: int = 2) -> str:
    implementer, part = CPUS[cpu]
    block = ("processor\t: {index}\nBogoMIPS\t: 48.00\nFeatures\t: {features}\nCPU implementer\t: {implementer}\n"
             "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 0\n\n")
    return "".join(block.format(index=index, features=FEATURES[cpu], implementer=implementer, part=part)
                   for index in range(cores))


def _device_root(root: Path, cpu: str) -> Path:
    """The file tree QEMU serves to an emulated `cpu` (its -L prefix): the sysroot's entries,
    linked, and a /proc/cpuinfo of its own, so that devices emulated at once do not share one."""
    device = root / "devices" / cpu
    (device / "proc").mkdir(parents=True, exist_ok=True)
    for entry in (root / "sysroot").iterdir():
        if entry.name != "proc" and not (device / entry.name).is_symlink():
            try:
                (device / entry.name).symlink_to(Path("..", "..", "sysroot", entry.name))  # relative: the tree may move
            except FileExistsError:  # another run linked it first
                pass
    staged = device / "proc" / f".cpuinfo.{os.getpid()}"
    staged.write_text(_cpuinfo(cpu))
    os.replace(staged, device / "proc" / "cpuinfo")
    return device


def _emulation(root: Path, cpu: str) -> tuple[list[str], dict]:
    """(the command prefix that runs the arm64 Python of `root` under QEMU emulating `cpu`, its
    environment); writes that device's /proc/cpuinfo."""
    if cpu not in CPUS:
        raise ConfigError(f"Unknown ARM64 CPU model {cpu!r}. Expected one of: {', '.join(CPUS)}.")
    device = _device_root(root, cpu)
    environment = {**os.environ, "QEMU_CPU": cpu, "PYTHONPATH": str(root / "site")}
    environment.pop("PYTHONHOME", None)
    qemu = root / "qemu" / "usr" / "bin" / "qemu-aarch64-static"
    return [str(qemu), "-L", str(device), str(device / _PYTHON)], environment


def run_check(bundle, cpu: str, root: Path = ROOT) -> dict:
    """The bundle's `check.py --json` result on an emulated ARM64 `cpu` (its "ok", "matches",
    "families", "accuracy", ... as on a device), or {"ok": False, "failures": [why]}."""
    root, bundle = _built(root), Path(bundle)
    prefix, environment = _emulation(root, cpu)
    return run_bundle_check([*prefix, bundle / "check.py", bundle, "--json"], env=environment)


def _built(root) -> Path:
    root = Path(root)
    if not is_built(root):
        raise ArtifactError(f"The ARM64 device is not built in {root}: run make arm64.")
    return root


_DEVICE_SCRIPTS = Path(__file__).resolve().parents[1] / "export" / "device"


def run_tensors(models: dict, kernels: str, cpu: str, root: Path = ROOT) -> dict:
    """Every tensor LiteRT's `kernels` compute on an emulated ARM64 `cpu` for `models`
    ({name: (tflite bytes, device inputs)}), by `export/device/tensors.py` run there:
    {name: {tensor index: array}, or the runtime's error text}. One emulator start for all.
    ConfigError for kernels LiteRT has not, or a name that is no plain file name."""
    from export.device.families import KernelFamily

    if kernels not in KernelFamily.kernel_names():
        raise ConfigError(f"Unknown kernels {kernels!r}; expected one of {', '.join(KernelFamily.kernel_names())}.")
    for name in models:
        if not name or Path(name).name != name or name.startswith("."):
            raise ConfigError(f"A probe model's name must be a plain file name; got {name!r}.")
    root = _built(root)
    with tempfile.TemporaryDirectory(prefix="softedge-arm64-") as directory:
        work = Path(directory)
        for script in ("tensors.py", "check.py", "families.py"):
            shutil.copy(_DEVICE_SCRIPTS / script, work / script)
        shutil.copy(_DEVICE_SCRIPTS.parents[1] / "models" / "tasks.py", work / "tasks.py")
        (work / "models").mkdir()
        for name, (tflite_bytes, inputs) in models.items():
            (work / "models" / f"{name}.tflite").write_bytes(tflite_bytes)
            np.save(work / "models" / f"{name}.npy", inputs)
        prefix, environment = _emulation(root, cpu)
        _run([*prefix, work / "tensors.py", work / "models", "--kernels", kernels], f"probing LiteRT on {cpu}",
             env=environment, timeout=1800)
        results = {}
        for name in models:
            stem = work / "models" / f"{name}.{kernels}"
            error = Path(f"{stem}.error.txt")
            if error.exists():
                results[name] = error.read_text()
            else:
                with np.load(f"{stem}.npz") as archive:
                    results[name] = {int(key): archive[key] for key in archive.files}
        return results


if __name__ == "__main__":
    build()
