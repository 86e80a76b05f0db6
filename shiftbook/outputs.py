"""Output directories: a command replaces only what shiftbook wrote itself.

Every directory a command publishes (a bundle, a report) is finished in a hidden sibling and
then renamed into place, so the path never holds a half-written tree. What is already at the
path is replaced only when it is safe to lose:

* nothing, or an empty directory;
* a directory shiftbook published before: it holds the marker file ``.shiftbook-output``
  naming its kind (bundles written before the marker existed are recognised by their
  manifest's ``format``);

anything else (a file, a directory of the user's, an output of another kind) is refused with
:class:`OutputError` naming the path, unless the caller passes ``force=True`` (the CLI's
``--force``). Commands call :func:`check_output_dir` before any work, so a refused path fails
in well under a second, and :func:`publish_dir` checks again when it publishes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["MARKER", "OutputError", "output_kind", "check_output_dir", "publish_dir",
           "write_text_atomic", "check_writable_file", "check_replaceable_file"]

MARKER = ".shiftbook-output"
_LEGACY_BUNDLE_FORMAT = "shiftbook-bundle"


class OutputError(ValueError):
    """An output path that holds something shiftbook did not write, or cannot be written."""


def output_kind(path: str | Path) -> str | None:
    """The kind of shiftbook output at ``path`` ("bundle", "report", ...), else None."""
    path = Path(path)
    if not path.is_dir():
        return None
    marker = path / MARKER
    try:
        if marker.is_file():
            kind = json.loads(marker.read_text()).get("kind")
            return kind if isinstance(kind, str) else None
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(manifest, dict) and manifest.get("format") == _LEGACY_BUNDLE_FORMAT:
        return "bundle"
    return None


def check_output_dir(path: str | Path, kind: str, *, force: bool = False) -> Path:
    """Refuse ``path`` as the output of a ``kind`` unless replacing it loses nothing.

    Also checks that the parent directory exists or can be created, and is writable.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not force:
            _refuse_foreign(path, kind)
    probe = path.absolute().parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent    # the nearest existing ancestor: the one that must be writable
    if not probe.is_dir():
        raise OutputError(f"output {str(path)!r}: {str(probe)!r} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"output {str(path)!r}: directory {str(probe)!r} is not writable")
    return path


def _refuse_foreign(path: Path, kind: str) -> None:
    if path.is_symlink() or not path.is_dir():
        raise OutputError(f"output {str(path)!r} exists and is not a {kind} directory; "
                          f"choose another path, remove it, or pass --force to replace it")
    found = output_kind(path)
    if found == kind:
        return
    try:
        empty = not any(path.iterdir())
    except OSError as e:
        raise OutputError(f"output {str(path)!r}: cannot read it: {e.strerror or e}") from None
    if empty:
        return
    what = f"a shiftbook {found}" if found else "files shiftbook did not write"
    raise OutputError(f"output {str(path)!r} holds {what}, not a {kind}; choose another "
                      f"path, remove it, or pass --force to replace it")


def publish_dir(tmp: Path, path: Path, kind: str, *, force: bool = False) -> None:
    """Put the finished directory ``tmp`` at ``path`` (a sibling), marked as a ``kind``.

    What was at ``path`` is renamed aside first and removed after, so ``path`` never holds a
    half-written tree; it must pass :func:`check_output_dir` (unless ``force``).
    """
    tmp, path = Path(tmp), Path(path)
    (tmp / MARKER).write_text(json.dumps({"kind": kind}) + "\n")
    old = None
    if path.exists() or path.is_symlink():
        if not force:
            _refuse_foreign(path, kind)
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
        os.rmdir(old)
        os.rename(path, old)
    os.rename(tmp, path)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it renamed into place (the
    path never holds half a file; permissions as a plain write under the umask)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable_file(path: str | Path, flag: str,
                        error: type[Exception] = OutputError) -> None:
    """Refuse a file path that cannot be written: a directory, a missing or read-only parent
    directory, or a read-only existing file (``flag`` names the option in the message)."""
    p = Path(path)
    if p.is_dir():
        raise error(f"{flag} {path}: is a directory, not a file")
    parent = p.absolute().parent
    if parent.exists() and not parent.is_dir():
        raise error(f"{flag} {path}: {parent} is a file, not a directory")
    if not parent.is_dir():
        raise error(f"{flag} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise error(f"{flag} {path}: directory {parent} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise error(f"{flag} {path}: the file exists and is not writable")


def check_replaceable_file(path: str | Path, flag: str, kind: str,
                           error: type[Exception] = OutputError, *,
                           command: str = "shiftbook compress") -> None:
    """Refuse to overwrite an existing file that is not an earlier output of this kind:
    ``"torch"`` (a ``torch.save`` file: a checkpoint or compressed model), ``"pt2"`` (a
    ``torch.export`` archive), ``"json"`` (a summary with ``method`` and ``layers``)."""
    p = Path(path)
    if not p.is_file():
        return
    try:
        with open(p, "rb") as f:
            head = f.read(4)
        ours = head == b"PK\x03\x04"              # torch.save and torch.export write zips
        if kind == "json":
            ours = isinstance(d := json.loads(p.read_text()), dict) and "method" in d \
                and "layers" in d
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise error(f"{flag} {path}: the file exists and is not an earlier `{command}` "
                    f"output; choose another path, remove it, or pass --force")
