"""The doctor's checks of the software: Python and the book's packages against its pins, the Keras
backend, where it runs (Colab, Kaggle, local), and whether SD v1.5's real weights can be had (never
required)."""

import dataclasses
import importlib
import importlib.metadata
import os
import platform
import re
import socket
import sys
import threading

import keras

from sdlib.doctor.result import fail, ok, warn
from sdlib.presets import PRESETS

# === Python and the book's packages ===
PYTHON_NEEDED = (3, 10)  # pyproject.toml's requires-python
PYTHON_BOOK = (3, 11)  # book/setup.md: "Python 3.11 or newer"
BOOK_INSTALL = ("python3.11 -m venv .venv && source .venv/bin/activate && "
                "python -m pip install -r requirements.txt && python -m pip install -e .")


@dataclasses.dataclass(frozen=True)
class Package:
    """One package of the book: what sdlib needs (pyproject.toml) and what the book pins
    (requirements.txt). ``role``: "required" (missing fails), "backend" (missing fails only for the
    active Keras backend), "local" (opens the chapters on a laptop; not checked on Colab or
    Kaggle, missing warns)."""

    name: str  # the distribution, as pip names it
    needed: str | None  # None: only the book uses it
    pinned: str
    extra: str = ""  # the pinned requirement's pip extra
    role: str = "required"

    def requirement(self) -> str:
        extra = f"[{self.extra}]" if self.extra else ""
        return f"{self.name}{extra}{self.pinned}"


# The one table of versions; tests/test_doctor.py holds it to requirements.txt and pyproject.toml.
PACKAGES = (
    Package("keras", ">=3.8", "==3.15.1"),
    Package("tensorflow", ">=2.18", "==2.21.0", role="backend"),
    Package("jax", ">=0.4.30", "==0.10.2", extra="cpu", role="backend"),
    Package("numpy", ">=1.26", ">=1.26,<3"),
    Package("safetensors", ">=0.4", ">=0.4"),
    Package("regex", ">=2023.0", ">=2023.0"),
    Package("pillow", ">=10.0", ">=10.0"),
    Package("matplotlib", None, ">=3.8"),  # the chapters' figures (sdlib.book.viz)
    Package("jupyterlab", None, ">=4.2,<5", role="local"),  # `jupyter lab notebooks/`
)
HUB_REQUIREMENT = "huggingface_hub>=0.25"  # pyproject.toml's optional `hub` extra


def pinned_requirement(name) -> str:
    """The book's requirement for package ``name`` ("keras==3.15.1"); just the name if unpinned."""
    return next((package.requirement() for package in PACKAGES if package.name == name), name)


def version_tuple(text):
    """The leading numbers of a version: "2.21.0rc1" -> (2, 21, 0)."""
    match = re.match(r"\d+(?:\.\d+)*", text)
    return tuple(int(part) for part in match.group().split(".")) if match else ()


def satisfies(version, specifier) -> bool:
    """Whether ``version`` meets ``specifier``, in the forms the book writes: "==3.15.1",
    ">=1.26,<3"."""
    have = version_tuple(version)
    for clause in specifier.split(","):
        operator, wanted = re.fullmatch(r"\s*(==|!=|>=|<=|<|>)\s*(\S+)\s*", clause).groups()
        want = version_tuple(wanted)
        width = max(len(have), len(want))
        left, right = have + (0,) * (width - len(have)), want + (0,) * (width - len(want))
        holds = {"==": left == right, "!=": left != right, ">=": left >= right,
                 "<=": left <= right, "<": left < right, ">": left > right}[operator]
        if not holds:
            return False
    return True


def check_python(context):
    version = platform.python_version()
    if sys.version_info[:2] < PYTHON_NEEDED:
        return fail("python", f"{version}, but sdlib needs 3.10 or newer", BOOK_INSTALL,
                    version=version)
    if sys.version_info[:2] < PYTHON_BOOK and not context.hosted:
        return warn("python", f"{version}: sdlib runs, the book is tested on 3.11 or newer",
                    BOOK_INSTALL, version=version)
    return ok("python", f"{version} ({sys.executable})", version=version)


def check_packages(context):
    """One line per package of :data:`PACKAGES` (Colab and Kaggle: not the local-only ones)."""
    return [check_package(context, package) for package in PACKAGES
            if not (package.role == "local" and context.hosted)]


def check_package(context, package):
    fix = context.pip_install(package.requirement())
    try:
        version = importlib.metadata.version(package.name)
    except importlib.metadata.PackageNotFoundError:
        if package.role == "backend" and package.name != keras.backend.backend():
            return ok(package.name, f"not installed (needed only with KERAS_BACKEND="
                      f"{package.name})", version=None)
        status = warn if package.role == "local" else fail
        return status(package.name, f"not installed (the book pins {package.pinned})", fix,
                      version=None)
    data = {"version": version, "needed": package.needed, "pinned": package.pinned}
    if package.needed and not satisfies(version, package.needed):
        return fail(package.name, f"{version}, but sdlib needs {package.needed} (the book pins "
                    f"{package.pinned})", fix, **data)
    if satisfies(version, package.pinned):
        return ok(package.name, f"{version} (the book pins {package.pinned})", **data)
    if context.hosted:
        return ok(package.name, f"{version}, {context.platform.title()}'s own (the book pins "
                  f"{package.pinned} for local runs)", **data)
    return warn(package.name, f"{version}, not the book's {package.pinned}: it may work, but the "
                "chapters were run with the pin", fix, **data)


# === The Keras backend and where it runs ===
def check_backend(context):
    name = keras.backend.backend()
    chosen = (f"KERAS_BACKEND={os.environ['KERAS_BACKEND']}" if os.environ.get("KERAS_BACKEND")
              else "KERAS_BACKEND unset")
    fix = context.pip_install(pinned_requirement(name))
    try:
        module = importlib.import_module(name)
        two = int(keras.ops.convert_to_numpy(keras.ops.add(1, 1)))
    except Exception as error:  # a broken install fails in any way; the line says which
        return fail("backend", f"{name} does not import or run ({type(error).__name__}: "
                    f"{error})", fix, backend=name)
    if two != 2:
        return fail("backend", f"{name} computes 1 + 1 = {two}", fix, backend=name)
    version = getattr(module, "__version__", "unknown")
    return ok("backend", f"{name} {version} runs Keras {keras.__version__} ({chosen})",
              backend=name, version=version)


def detect_platform() -> str:
    """"colab", "kaggle" or "local"."""
    if "google.colab" in sys.modules or os.environ.get("COLAB_RELEASE_TAG"):
        return "colab"
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE"):
        return "kaggle"
    return "local"


def check_platform(context):
    where = {"colab": "Google Colab", "kaggle": "Kaggle", "local": "local"}[context.platform]
    return ok("platform", f"{where}: {platform.system()} {platform.release()} "
              f"({platform.machine()})", platform=context.platform, os=platform.platform())


# === SD v1.5's real weights: never required ===
HUB_ADDRESS = ("huggingface.co", 443)
HUB_TIMEOUT_S = 2.0


def hub_answers(address=HUB_ADDRESS, timeout=HUB_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``address`` opens within ``timeout`` seconds; any error is a no.
    The lookup runs in a thread, so a hanging DNS costs ``timeout`` too, not the resolver's."""
    answered = []

    def connect():
        try:
            with socket.create_connection(address, timeout=timeout):
                answered.append(True)
        except Exception:  # no network, no DNS, a firewall, a test's network guard: all a no
            pass

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answered)


def check_real_weights(context):
    name = "real weights"
    real = [preset for preset in PRESETS.values() if preset.weights_env]
    for preset in real:
        path = os.environ.get(preset.weights_env)
        if path and not os.path.exists(os.path.expanduser(path)):
            placeholder = f"/path/to/{preset.repo_id.split('/')[-1]}"
            return warn(name, f"${preset.weights_env} names {path}, which does not exist (not "
                        "required)", context.set_env(preset.weights_env, placeholder))
    sd15 = PRESETS["sd-v1-5"]
    if os.environ.get(sd15.weights_env):
        return ok(name, f"on disk: ${sd15.weights_env}={os.environ[sd15.weights_env]}",
                  source="disk")
    # Unreachable weights are not a problem (every chapter runs mini-shapes without them), so the
    # check is ok either way; the line says how to get them.
    offline = "not reachable here, and not required: the chapters run mini-shapes. To use SD v1.5"
    copy_fix = context.set_env(sd15.weights_env, "/path/to/stable-diffusion-v1-5")
    copy = f"{offline}, download {sd15.repo_id} where there is network, then `{copy_fix}`"
    try:
        import huggingface_hub  # noqa: F401  (the optional `hub` extra)
    except ImportError:
        install = context.pip_install(HUB_REQUIREMENT)
        return ok(name, f"{offline}: `{install}` (huggingface_hub is not installed), or "
                  f"`{copy_fix}`", source=None, how_to_get=install)
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return ok(name, f"{copy} (HF_HUB_OFFLINE is set)", source=None, how_to_get=copy_fix)
    if hub_answers():
        return ok(name, f"the hub answers: {sd15.repo_id} downloads on first use", source="hub")
    return ok(name, f"{copy} (huggingface.co did not answer within {HUB_TIMEOUT_S:.0f} s)",
              source=None, how_to_get=copy_fix)
