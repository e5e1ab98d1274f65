"""Store the outputs of the readers' book build in the committed notebooks.

    bash tools/build_book.sh            # executes every chapter into _build/jupyter_execute/
    python tools/store_outputs.py       # copies those outputs into notebooks/**/*.ipynb

Only outputs and execution counts are copied; a notebook whose cell sources differ from the executed
copy (edited since the build) is left alone and named, so no edit is lost. myst-nb's stream merging
leaves the merged text followed by the originals; each such run is stored once.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def collapse_merged_streams(outputs):
    kept, index = [], 0
    while index < len(outputs):
        output = outputs[index]
        kept.append(output)
        index += 1
        if output.get("output_type") != "stream":
            continue
        text = "".join(output["text"])
        end = index
        while (end < len(outputs) and outputs[end].get("output_type") == "stream"
               and outputs[end].get("name") == output.get("name")):
            end += 1
        rest = "".join("".join(o["text"]) for o in outputs[index:end])
        if end > index and text.endswith(rest) and len(text) > len(rest):
            index = end  # the merged first output already holds them
        output["text"] = text
    return kept


def main():
    executed_root = ROOT / "_build" / "jupyter_execute" / "notebooks"
    skipped = []
    notebooks = ROOT / "notebooks"
    for path in sorted(notebooks.rglob("*.ipynb")):  # the chapters, and teaching/'s pages
        if ".ipynb_checkpoints" in path.parts:
            continue
        name = path.relative_to(notebooks).as_posix()
        executed = executed_root / name
        if not executed.exists():
            skipped.append(f"{name}: not executed (run bash tools/build_book.sh first)")
            continue
        ours, theirs = json.loads(path.read_text()), json.loads(executed.read_text())
        sources = [("".join(c["source"]), c["cell_type"]) for c in ours["cells"]]
        if sources != [("".join(c["source"]), c["cell_type"]) for c in theirs["cells"]]:
            skipped.append(f"{name}: edited since the build; rebuild, then store")
            continue
        for cell, done in zip(ours["cells"], theirs["cells"], strict=True):
            if cell["cell_type"] == "code":
                cell["outputs"] = collapse_merged_streams(done["outputs"])
                cell["execution_count"] = done["execution_count"]
        path.write_text(json.dumps(ours, indent=1, ensure_ascii=False) + "\n")
        print(f"stored outputs of {name}")
    for line in skipped:
        print("skipped", line, file=sys.stderr)
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
