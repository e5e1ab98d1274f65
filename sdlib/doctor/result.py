"""What every check of the doctor returns (a :class:`Result`), what the checks share while they run
(a :class:`Context`), and fix commands written for where they will be pasted: a shell, or a
notebook cell (``%pip``, ``%env``)."""

import dataclasses

STATUSES = ("ok", "warn", "fail")


@dataclasses.dataclass
class Result:
    """One check's line: ``status`` "ok", "warn" or "fail"; a warn or fail carries ``fix``, the
    command (or, where none exists, the one action) that puts it right."""

    name: str
    status: str
    detail: str
    fix: str | None = None
    data: dict = dataclasses.field(default_factory=dict)  # the numbers behind detail, for --json
    seconds: float = 0.0  # how long the check took

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {STATUSES}.")
        if self.status != "ok" and not self.fix:
            raise ValueError(f"the {self.status} of check {self.name!r} needs a fix.")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def ok(name, detail, **data) -> Result:
    return Result(name, "ok", detail, data=data)


def warn(name, detail, fix, **data) -> Result:
    return Result(name, "warn", detail, fix, data=data)


def fail(name, detail, fix, **data) -> Result:
    return Result(name, "fail", detail, fix, data=data)


@dataclasses.dataclass
class Context:
    """What the checks share: the options, and what earlier checks found for later ones."""

    require_gpu: bool = False  # no GPU is a fail (--gpu, $SDLIB_DOCTOR_REQUIRE_GPU=1)
    in_notebook: bool = False  # fixes as notebook magics: %pip install, %env
    platform: str = "local"  # "colab", "kaggle" or "local" (environment.detect_platform)
    mini_shapes: object = None  # the loaded mini-shapes pipeline, for the compile and timing checks
    image_seconds: float | None = None  # one warm 25-step mini-shapes image, for the estimate

    @property
    def hosted(self) -> bool:
        """Colab or Kaggle: a notebook service that brings its own builds of the big packages."""
        return self.platform in ("colab", "kaggle")

    def pip_install(self, *requirements) -> str:
        quoted = " ".join(f'"{requirement}"' for requirement in requirements)
        return f"{'%pip install' if self.in_notebook else 'python -m pip install'} {quoted}"

    def set_env(self, name, value) -> str:
        return f"%env {name}={value}" if self.in_notebook else f"export {name}={value}"

    def shell(self, command) -> str:
        """A shell command, as a notebook cell runs one (``!``) where the fix goes into a cell."""
        return f"!{command}" if self.in_notebook else command

    def rerun(self) -> str:
        """The doctor's own command, as the reader started it."""
        return "sdlib.doctor()" if self.in_notebook else "python -m sdlib doctor"
