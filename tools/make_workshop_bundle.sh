#!/usr/bin/env bash
# Make the workshop's offline bundle: a folder a teacher copies to a USB stick, from which every
# learner installs the chapters' software with no network and opens the chapters
# (book/teaching/offline_bundle.md).
#
#   bash tools/make_workshop_bundle.sh OUT_DIR [--platform LIST] [--python LIST] [--upgrade]
#
#   --platform  comma-separated; default linux-x86_64,macos-arm64,windows-amd64
#                 linux-x86_64   manylinux wheels for glibc 2.28 or newer (Ubuntu 20.04+, Debian 10+)
#                 linux-aarch64  the same for 64-bit ARM Linux
#                 macos-arm64    Apple silicon, macOS 12 or newer (TensorFlow has no Intel-Mac wheels)
#                 windows-amd64  64-bit Windows 10 or 11
#   --python    comma-separated CPython versions; default 3.11,3.12. 3.13 works too; 3.10 does not
#               (keras 3.15.1, the book's pin, needs Python 3.11 or newer).
#   --upgrade   take the newest releases requirements-workshop.txt allows; without it a re-run keeps
#               the versions in OUT_DIR/locks/ (where they still fit) and so downloads nothing new.
#
# What each costs: a platform and Python pair brings its own TensorFlow, numpy, ... wheels, 630 to
# 660 MB for Linux x86_64, 400 to 430 MB for Windows, 270 to 300 MB for macOS; the shared wheels
# (JupyterLab and friends, and sdlib's 22 MB) come to about 100 MB. The six default pairs make
# 2.6 GiB (the measurements: book/teaching/offline_bundle.md).
#
# OUT_DIR gets: wheels/ (every wheel, plus sdlib's own, built from this checkout with the shipped
# models inside), locks/ (the exact versions for each platform and Python), requirements-workshop.txt,
# notebooks/ (the chapters) and INSTALL.txt (the learners' commands). Running it again reuses the
# locks and wheels already there and removes the wheels no lock names any more, so OUT_DIR holds
# exactly what the last run asked for.
#
# Needs network to PyPI, a Python with pip ($PYTHON, default python3) and uv, which resolves each
# platform's dependencies under that platform's markers (pip download --platform would use this
# machine's, leaving out e.g. colorama on Windows). Without uv on PATH it is installed, once, into a
# virtual environment under ~/.cache/sdlib-workshop-bundle.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}

die() { echo "make_workshop_bundle: error: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

out="" platform_list="linux-x86_64,macos-arm64,windows-amd64" python_list="3.11,3.12" upgrade=""
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --platform) [ $# -ge 2 ] || die "--platform needs a value"; platform_list=$2; shift 2 ;;
    --platform=*) platform_list=${1#*=}; shift ;;
    --python) [ $# -ge 2 ] || die "--python needs a value"; python_list=$2; shift 2 ;;
    --python=*) python_list=${1#*=}; shift ;;
    --upgrade) upgrade=--upgrade; shift ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$out" ] || die "one OUT_DIR only (got '$out' and '$1')"; out=$1; shift ;;
  esac
done
[ -n "$out" ] || { usage >&2; die "OUT_DIR is missing"; }
IFS=, read -r -a platforms <<< "$platform_list"
IFS=, read -r -a pythons <<< "$python_list"
[ ${#platforms[@]} -gt 0 ] && [ ${#pythons[@]} -gt 0 ] || die "empty --platform or --python list"

# manylinux tags, newest first (pip prefers the first it can use), down to manylinux2014 (glibc 2.17).
manylinux() { for minor in $(seq 28 -1 17); do printf -- "--platform manylinux_2_%s_%s " "$minor" "$1"; done
              printf -- "--platform manylinux2014_%s" "$1"; }
# A platform's names for uv (resolving) and for pip (downloading).
tags_of() {
  case $1 in
    linux-x86_64)  uv_platform=x86_64-manylinux_2_28;  pip_platforms=$(manylinux x86_64) ;;
    linux-aarch64) uv_platform=aarch64-manylinux_2_28; pip_platforms=$(manylinux aarch64) ;;
    macos-arm64)   uv_platform=aarch64-apple-darwin;   pip_platforms="--platform macosx_12_0_arm64" ;;
    windows-amd64) uv_platform=x86_64-pc-windows-msvc; pip_platforms="--platform win_amd64" ;;
    *) die "unknown platform '$1' (linux-x86_64, linux-aarch64, macos-arm64, windows-amd64)" ;;
  esac
}
for python in "${pythons[@]}"; do
  [[ $python =~ ^3\.[0-9]+$ ]] || die "--python takes versions like 3.11, not '$python'"
done
for platform in "${platforms[@]}"; do tags_of "$platform"; done

command -v "$PY" >/dev/null || die "no '$PY' on PATH (set PYTHON=/path/to/python3)"
"$PY" -m pip --version >/dev/null 2>&1 || die "'$PY -m pip' does not work: install pip for $PY"
if command -v uv >/dev/null; then
  UV=$(command -v uv)
else
  tools="${XDG_CACHE_HOME:-$HOME/.cache}/sdlib-workshop-bundle/uv-venv"
  if [ ! -x "$tools/bin/uv" ]; then
    echo "uv is not on PATH: installing it into $tools (once)"
    "$PY" -m venv "$tools" || die "could not make a virtual environment at $tools"
    "$tools/bin/python" -m pip install --quiet uv || die "could not install uv from PyPI"
  fi
  UV="$tools/bin/uv"
fi

mkdir -p "$out/wheels" "$out/locks"
out=$(cd "$out" && pwd)
case $out/ in "$ROOT"/*) echo "note: $out is inside the checkout; git will see it as untracked" ;; esac
start=$(date +%s)
kb_before=$(du -sk "$out/wheels" | cut -f1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$ROOT"

# === The bookkeeping, in Python: which wheel a target installs, what is missing, what it costs ===
cat > "$work/bundle.py" <<'PYTHON'
"""python bundle.py missing OUT TARGET: the lock's pins with no wheel in OUT/wheels yet.
python bundle.py check ROOT OUT TARGET...: check sdlib's wheel, drop unused wheels, size each target."""
import re
import sys
import zipfile
from pathlib import Path


def fail(message):
    sys.exit(f"make_workshop_bundle: error: {message}")


def normal(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(out, target):
    """{normalised name: version} of locks/TARGET.txt."""
    pins = {}
    for line in (out / "locks" / f"{target}.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split(";")[0].strip().split("==")
            pins[normal(name)] = version.strip()
    return pins


def platform_of(tag):
    if tag == "any":
        return "any"
    if tag.startswith("manylinux"):
        return "linux-x86_64" if tag.endswith("x86_64") else "linux-aarch64"
    if tag.startswith("macosx") and tag.endswith(("arm64", "universal2")):
        return "macos-arm64"
    return {"win_amd64": "windows-amd64"}.get(tag)


def wheel_fits(filename, target):
    """Whether a wheel installs on a target ("linux-x86_64-cp311"), by its file name's tags."""
    platform, cpython = target.rsplit("-", 1)
    python_tags, abi, platform_tags = filename[:-len(".whl")].split("-")[-3:]
    minor = int(cpython[3:])
    python_ok = any(tag in (cpython, "py3", "py2") or (abi == "abi3" and tag.startswith("cp3")
                                                       and int(tag[3:]) <= minor)
                    for tag in python_tags.split("."))
    return python_ok and any(platform_of(tag) in ("any", platform)
                             for tag in platform_tags.split("."))


def wheels_of(out, target, pins):
    return [wheel for wheel in sorted((out / "wheels").glob("*.whl"))
            if pins.get(normal(wheel.name.split("-")[0])) == wheel.name.split("-")[1]
            and wheel_fits(wheel.name, target)]


def missing(out, target):
    pins = lock_pins(out, target)
    have = {normal(wheel.name.split("-")[0]) for wheel in wheels_of(out, target, pins)}
    for name, version in sorted(pins.items()):
        if name not in have:
            print(f"{name}=={version}")


def megabytes(files):
    return sum(path.stat().st_size for path in files) / 1e6


def check(root, out, targets):
    # sdlib's wheel must carry the shipped models, the tokenizer vocabulary and the results archive.
    sdlib_wheels = sorted((out / "wheels").glob("sdlib-*.whl"))
    if len(sdlib_wheels) != 1:
        fail(f"expected one sdlib wheel in wheels/, found {[w.name for w in sdlib_wheels]}")
    inside = set(zipfile.ZipFile(sdlib_wheels[0]).namelist())
    shipped = [path.relative_to(root).as_posix()
               for pattern in ("sdlib/assets/*", "sdlib/book/results/*.json")
               for path in sorted(root.glob(pattern)) if path.is_file()]
    lacking = [path for path in shipped if path not in inside]
    if lacking or "sdlib/assets/mini_shapes.safetensors" not in inside:
        fail(f"{sdlib_wheels[0].name} lacks package data: "
             f"{lacking or ['sdlib/assets/mini_shapes.safetensors']}")
    print(f"   {sdlib_wheels[0].name}: {megabytes(sdlib_wheels):.1f} MB, with the "
          f"{len(shipped)} shipped files (models, tokenizer vocabulary, results archive)",
          file=sys.stderr)

    per_target = {}
    for target in targets:
        pins = lock_pins(out, target)
        per_target[target] = wheels_of(out, target, pins)
        found = {normal(wheel.name.split("-")[0]) for wheel in per_target[target]}
        if found != set(pins):
            fail(f"{target}: wheels/ has no wheel for {sorted(set(pins) - found)}")
    used = set().union(*per_target.values()) | set(sdlib_wheels)
    for wheel in sorted((out / "wheels").glob("*.whl")):
        if wheel not in used:
            print(f"   removing wheels/{wheel.name}: no lock of this run names it", file=sys.stderr)
            wheel.unlink()
    for lock in sorted((out / "locks").glob("*.txt")):
        if lock.stem not in targets:
            print(f"   removing locks/{lock.name}: not asked for in this run", file=sys.stderr)
            lock.unlink()
    for target in targets:
        alone = [wheel for wheel in per_target[target]
                 if not any(wheel in per_target[other] for other in targets if other != target)]
        print(f"  {target:<20} {len(per_target[target]) + 1:>3} wheels, "
              f"{megabytes(per_target[target] + sdlib_wheels):>4.0f} MB to install, "
              f"{megabytes(alone):>4.0f} MB of them for this target alone")


if __name__ == "__main__":
    if sys.argv[1] == "missing":
        missing(Path(sys.argv[2]), sys.argv[3])
    else:
        check(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:])
PYTHON

# === One lock and its wheels per platform and Python ===
targets=() target_platforms=() target_pythons=()  # parallel lists: bash 3.2 (macOS) has no maps
for platform in "${platforms[@]}"; do
  tags_of "$platform"
  for python in "${pythons[@]}"; do
    target=$platform-cp${python/./}
    lock=$out/locks/$target.txt
    echo "== $target: resolving requirements-workshop.txt for $platform, CPython $python"
    # uv keeps the versions of an existing lock that still fit unless --upgrade. Its macOS target
    # is macOS 13 unless told; 12 matches pip's tag below.
    # shellcheck disable=SC2086  # upgrade is empty or one option
    MACOSX_DEPLOYMENT_TARGET=12.0 "$UV" pip compile --quiet --no-header --only-binary :all: \
        --python-platform "$uv_platform" --python-version "$python" $upgrade \
        requirements-workshop.txt -o "$lock" \
      || die "requirements-workshop.txt has no all-wheel solution for $target (uv's message above)"
    "$PY" "$work/bundle.py" missing "$out" "$target" > "$work/missing.txt"
    count=$(grep -c '==' "$work/missing.txt" || true)
    echo "   $(grep -c '==' "$lock") wheels locked, $count to download"
    if [ "$count" -gt 0 ]; then
      # shellcheck disable=SC2086  # pip_platforms is a list of options
      "$PY" -m pip download --quiet --no-deps --only-binary=:all: --implementation cp \
          --python-version "$python" $pip_platforms -d "$out/wheels" -r "$work/missing.txt" \
        || die "pip could not download the wheels of locks/$target.txt (pip's message above)"
    fi
    targets+=("$target") target_platforms+=("$uv_platform") target_pythons+=("$python")
  done
done

# === sdlib itself, with its shipped models ===
echo "== sdlib: building its wheel from $ROOT"
# From a copy of just what the wheel is made of, so no stale build/ folder can slip old files in.
mkdir "$work/src"
cp -r pyproject.toml README.md sdlib "$work/src"/
find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
rm -f "$out"/wheels/sdlib-*.whl
"$PY" -m pip wheel --quiet --no-deps -w "$out/wheels" "$work/src" >/dev/null \
  || die "pip wheel could not build sdlib (pip's message above)"

# === The chapters and the learners' requirements ===
rm -rf "$out/notebooks"
# outputs/ is where the chapters write their pictures (chapter 3 expects the folder to exist).
mkdir -p "$out/notebooks/outputs"
cp notebooks/*.ipynb "$out/notebooks/"
if ls notebooks/teaching/*.ipynb >/dev/null 2>&1; then  # the Teaching part's notebooks
  mkdir -p "$out/notebooks/teaching/outputs"
  cp notebooks/teaching/*.ipynb "$out/notebooks/teaching/"
fi
cp requirements-workshop.txt "$out/"

# === Check, prune and size; then prove each target resolves from wheels/ alone ===
"$PY" "$work/bundle.py" check "$ROOT" "$out" "${targets[@]}" > "$work/summary.txt" \
  || die "the bundle check failed (message above)"
summary=$(cat "$work/summary.txt")
sdlib_wheels=("$out"/wheels/sdlib-*.whl)  # exactly one: the check above says so
sdlib_version=$(basename "${sdlib_wheels[0]}" | cut -d- -f2)
printf -- "-r %s\nsdlib\n" "$out/requirements-workshop.txt" > "$work/request.txt"
for index in "${!targets[@]}"; do
  target=${targets[$index]}
  rm -f "$work/offline.txt"  # uv would take an existing output file's versions as preferences
  MACOSX_DEPLOYMENT_TARGET=12.0 "$UV" pip compile --quiet --no-header --no-annotate --offline \
      --no-index --find-links "$out/wheels" --only-binary :all: \
      --python-platform "${target_platforms[$index]}" --python-version "${target_pythons[$index]}" \
      "$work/request.txt" -o "$work/offline.txt" \
    || die "$target does not resolve from wheels/ alone (uv's message above)"
  grep '==' "$work/offline.txt" | sort > "$work/offline.sorted"
  (grep '==' "$out/locks/$target.txt" | sed 's/ .*//'; echo "sdlib==$sdlib_version") | sort \
    > "$work/lock.sorted"
  diff "$work/lock.sorted" "$work/offline.sorted" >&2 \
    || die "$target: wheels/ alone resolves to other versions than locks/$target.txt (diff above)"
done
echo "== each target resolves from wheels/ with no index: ${targets[*]}"

# === INSTALL.txt ===
made=$(date -u +%Y-%m-%d)
revision=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo "not from a git checkout")
pythons_text=${python_list//,/, }
python_newest=${pythons[${#pythons[@]}-1]}
cat > "$out/INSTALL.txt" <<EOF
The sdlib workshop bundle: the book's software and chapters, installed with no network.
Made on $made by tools/make_workshop_bundle.sh from sdlib $sdlib_version ($revision).

What is here
  wheels/                    every package the chapters need, for the platforms below, and sdlib
                             itself (its miniature model, mini-shapes, inside)
  requirements-workshop.txt  what to install: Keras, TensorFlow, JupyterLab, matplotlib, ...
  locks/                     the exact versions for each platform and Python, for reference
  notebooks/                 the chapters (and notebooks/teaching/, the Teaching part's)

Platforms and Pythons in this bundle (what one laptop installs):
$summary

Each laptop needs CPython $pythons_text beforehand (python.org's installers; on Debian or Ubuntu
also the python3-venv package) and room for the copy below plus about 2.5 GB for the install.

1. Copy this whole folder from the stick onto the laptop, e.g. into your home folder, and open a
   terminal in the copy (the chapters write their pictures next to themselves). Once step 2 has
   worked, the copy's wheels/ folder may go.

2. Install, no network needed:
   Linux and macOS:
     python$python_newest -m venv .venv
     .venv/bin/python -m pip install --no-index --find-links wheels -r requirements-workshop.txt sdlib
   Windows (PowerShell or cmd):
     py -$python_newest -m venv .venv
     .venv\\Scripts\\python -m pip install --no-index --find-links wheels -r requirements-workshop.txt sdlib
   Any Python listed above works in place of $python_newest. The same install by one name:
     python -m pip install --no-index --find-links wheels "sdlib[workshop]"

3. Check the laptop, then open the chapters (start with 01_quickstart.ipynb):
   Linux and macOS:  .venv/bin/python -m sdlib doctor
                     .venv/bin/jupyter lab notebooks
   Windows:          .venv\\Scripts\\python -m sdlib doctor
                     .venv\\Scripts\\jupyter lab notebooks
   (Not "python -m jupyter lab": that starts any other JupyterLab found on PATH first.)
   The chapters run mini-shapes, the model inside sdlib, on the CPU. If you have used Keras with
   another backend before, set KERAS_BACKEND=tensorflow first.

"No matching distribution found" from pip means this laptop's platform or Python is not one of
those above: use one that is, or ask for a bundle made with its --platform or --python.
EOF

kb_after=$(du -sk "$out/wheels" | cut -f1)
echo "== done in $(( $(date +%s) - start )) s; wheels/ changed by $(( (kb_after - kb_before) / 1024 )) MB in this run"
echo "$summary"
echo "bundle: $(du -sh "$out" | cut -f1) in $out (the learners' commands: $out/INSTALL.txt)"
