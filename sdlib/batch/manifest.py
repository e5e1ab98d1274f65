"""A batch's output folder: the PNG images and ``manifest.jsonl``, one JSON object per finished
image, written so that a run killed at any point loses nothing and leaves nothing half-done.

A job is done when its PNG and its manifest line are both written, in that order: the PNG goes to
a temporary name, is synced and renamed into place; then its line is appended and synced. On
reopening, a torn last line, a record whose image is gone or has another size, and any leftover
temporary file are dropped, so those jobs run again; a PNG without a record is made again. One
run at a time writes into a folder (a lock file that the system releases when the process ends,
however it ends).
"""

import json
import os
import tempfile

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one run at a time is then up to the user
    fcntl = None

MANIFEST = "manifest.jsonl"
LOCK = ".sdlib-batch.lock"
TEMPORARY_PREFIX = ".sdlib-batch-"
# What must match for an existing image to count as done with this run's model.
IDENTITY_KEYS = ("weights_sha256", "height", "width")


class OutputFolder:
    """The images and manifest of one batch; ``open`` it (it takes the lock), then write."""

    def __init__(self, folder):
        self.folder = os.path.abspath(os.fspath(folder))
        self.manifest_path = os.path.join(self.folder, MANIFEST)
        self._lock = None
        self._manifest = None

    def open(self, identity):
        """Lock the folder, clean what an earlier run left half-done, and return the records of
        the images that are done ({job id: record}). Refuses a folder whose images another model
        (``identity``: ``ModelSpec.identity()``) made. A missing folder is created."""
        os.makedirs(self.folder, exist_ok=True)
        self._take_lock()
        try:
            for name in os.listdir(self.folder):
                if name.startswith(TEMPORARY_PREFIX):
                    os.remove(os.path.join(self.folder, name))
            records, dropped = self._read_records()
            check_same_model(records.values(), identity, self.folder)
            if dropped:
                self._rewrite(records.values())
            self._manifest = open(self.manifest_path, "ab")
        except BaseException:
            self.close()
            raise
        return records

    def close(self):
        if self._manifest is not None:
            self._manifest.close()
            self._manifest = None
        if self._lock is not None:
            self._lock.close()  # releases the lock
            self._lock = None

    def write_image(self, file_name, png):
        """Put the PNG bytes at ``file_name`` atomically (replacing an unrecorded one)."""
        path = os.path.join(self.folder, file_name)
        write_atomically(path, png)
        return path

    def append(self, record):
        """One manifest line, synced to disk before this returns."""
        line = json.dumps(record, ensure_ascii=False, separators=(", ", ": ")) + "\n"
        self._manifest.write(line.encode())
        self._manifest.flush()
        os.fsync(self._manifest.fileno())

    def _take_lock(self):
        self._lock = open(os.path.join(self.folder, LOCK), "a")
        if fcntl is None:
            return
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise BlockingIOError(f"Another sdlib batch is writing into {self.folder}; wait for "
                                  "it to end, or choose another --out.") from None

    def _read_records(self):
        """The valid records ({id: record}, first one of an id wins) and whether any line was
        dropped (torn, unreadable, a duplicate, or its image missing or of another size)."""
        records, dropped = {}, False
        if not os.path.exists(self.manifest_path):
            return records, dropped
        with open(self.manifest_path, "rb") as stream:
            data = stream.read()
        lines = data.split(b"\n")
        if lines[-1]:  # no newline after the last line: the run ended while writing it
            dropped = True
        for line in lines[:-1]:
            record = parse_record(line)
            if record is None or record["id"] in records or not self._image_intact(record):
                dropped = True
                continue
            records[record["id"]] = record
        return records, dropped

    def _image_intact(self, record):
        path = os.path.join(self.folder, record["file"])
        return os.path.isfile(path) and os.path.getsize(path) == record["png_bytes"]

    def _rewrite(self, records):
        text = "".join(json.dumps(record, ensure_ascii=False, separators=(", ", ": ")) + "\n"
                       for record in records)
        write_atomically(self.manifest_path, text.encode())


def parse_record(line):
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    needed = {"id": str, "file": str, "png_bytes": int}
    if not isinstance(record, dict) or not all(isinstance(record.get(key), kind)
                                               for key, kind in needed.items()):
        return None
    if os.path.basename(record["file"]) != record["file"]:  # never look outside the folder
        return None
    return record


def check_same_model(records, identity, folder):
    for record in records:
        theirs = {key: record.get(key) for key in IDENTITY_KEYS}
        mine = {key: identity[key] for key in IDENTITY_KEYS}
        if identity["weights_sha256"] is None:  # seeded random weights: the name says which
            theirs["model"], mine["model"] = record.get("model"), identity["model"]
        if theirs != mine:
            raise ValueError(
                f"{folder} holds images of another model or size ({record.get('model')}, "
                f"{record.get('height')}x{record.get('width')}, weights sha256 "
                f"{str(record.get('weights_sha256'))[:12]}; this run: {identity['model']}, "
                f"{identity['height']}x{identity['width']}, weights sha256 "
                f"{str(identity['weights_sha256'])[:12]}); choose another --out, or the same "
                "model to resume.")


def write_atomically(path, data):
    """Write ``data`` to a temporary file beside ``path``, sync it, rename it into place and
    sync the folder: ``path`` is then the old file or the whole new one, never a part."""
    folder = os.path.dirname(path)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=TEMPORARY_PREFIX, suffix=".part")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600; outputs get normal permissions
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    sync_folder(folder)


def sync_folder(folder):
    if not hasattr(os, "O_DIRECTORY"):  # Windows cannot open a folder
        return
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
