"""A local, versioned blueprint store: root/<model_id>/v<N>/blueprint.json (docs/blueprints.md).

Published versions are immutable: a file is written once, through a temporary file hard-linked into place
(`os.link` fails if the target exists), so a crash never leaves half a file and two publishers never overwrite
each other. Model ids are restricted to names that are safe as one path component.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from dataclasses import replace
from pathlib import Path

from orchestrator.blueprints.model import Blueprint, as_schema_1_0, dumps_blueprint, load_blueprint
from orchestrator.errors import InputError

BLUEPRINT_FILE = "blueprint.json"
MODEL_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_VERSION_DIR = re.compile(r"^v([1-9][0-9]{0,8})$")
_MAX_PUBLISH_RETRIES = 100


class BlueprintVersionExists(InputError):
    """The version is already published; published versions are immutable."""

    def __init__(self, model_id: str, version: int) -> None:
        super().__init__(
            f"{model_id} v{version}",
            "is already published",
            "published blueprint versions are immutable; publish a new version instead",
        )
        self.model_id = model_id
        self.version = version


def check_model_id(model_id: str) -> str:
    """`model_id` if it is safe as a directory name (no slashes, no traversal); else InputError."""
    if not isinstance(model_id, str) or not MODEL_ID_PATTERN.match(model_id) or model_id in (".", ".."):
        raise InputError(
            "model_id",
            f"{model_id!r} is not a valid store name",
            "use letters, digits and _ . - (first a letter or digit, at most 128 characters, no slashes)",
        )
    return model_id


def _check_version(version: int) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= 999_999_999:
        raise InputError("version", f"must be an integer >= 1, got {version!r}", "versions are v1, v2, ...")
    return version


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform/file system allows opening a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class LocalBlueprintStore:
    """Versioned blueprints of many models under one directory."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, model_id: str, version: int) -> Path:
        """Where version `version` of `model_id` lives (whether or not it exists)."""
        return self.root / check_model_id(model_id) / f"v{_check_version(version)}" / BLUEPRINT_FILE

    def models(self) -> list[str]:
        """Model ids with at least one published version, sorted."""
        if not self.root.is_dir():
            return []
        out = []
        for child in self.root.iterdir():
            if child.is_dir() and MODEL_ID_PATTERN.match(child.name) and self.versions(child.name):
                out.append(child.name)
        return sorted(out)

    def versions(self, model_id: str) -> list[int]:
        """Published versions of `model_id`, ascending."""
        model_dir = self.root / check_model_id(model_id)
        if not model_dir.is_dir():
            return []
        found = []
        for child in model_dir.iterdir():
            m = _VERSION_DIR.match(child.name)
            if m and (child / BLUEPRINT_FILE).is_file():
                found.append(int(m.group(1)))
        return sorted(found)

    def get(self, model_id: str, version: int | None = None) -> Blueprint:
        """A published blueprint; version None means the latest."""
        known = self.versions(model_id)
        if not known:
            raise InputError(f"model_id {model_id!r}", "has no published blueprint", f"publish one under {self.root}")
        if version is None:
            version = known[-1]
        elif _check_version(version) not in known:
            raise InputError(
                f"{model_id} v{version}", "is not published", f"published versions: {', '.join(map(str, known))}"
            )
        path = self.path(model_id, version)
        bp = load_blueprint(path)
        if bp.model_id != model_id or bp.blueprint_version != version:
            raise InputError(
                str(path),
                f"holds {bp.model_id!r} v{bp.blueprint_version}, not {model_id!r} v{version}",
                "the store was edited by hand; restore the file",
            )
        return bp

    def publish(self, bp: Blueprint, *, version: int | None = None) -> tuple[int, Path]:
        """Write `bp` as a new version (None: the next one) and return (version, path).

        The version is written into the file's blueprint_version. An existing version raises
        BlueprintVersionExists. A paper-shape blueprint is stored as schema 1.0 (it needs the version field).
        """
        model_id = check_model_id(bp.model_id)
        bp = as_schema_1_0(bp)
        if version is not None:
            _check_version(version)
            if version in self.versions(model_id):
                raise BlueprintVersionExists(model_id, version)
            return version, self._write(replace(bp, blueprint_version=version), model_id, version)
        for _ in range(_MAX_PUBLISH_RETRIES):
            known = self.versions(model_id)
            candidate = (known[-1] + 1) if known else 1
            try:
                return candidate, self._write(replace(bp, blueprint_version=candidate), model_id, candidate)
            except BlueprintVersionExists:  # another publisher took it between listing and linking
                continue
        raise InputError(model_id, "could not claim a new version", "too many concurrent publishers; retry")

    def _write(self, bp: Blueprint, model_id: str, version: int) -> Path:
        text = dumps_blueprint(bp)  # validates before anything touches the disk
        final = self.path(model_id, version)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{BLUEPRINT_FILE}.{os.getpid()}.{secrets.token_hex(8)}.tmp"
        try:
            with open(tmp, "x", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o444)  # published versions are read-only as well as never rewritten
            try:
                os.link(tmp, final)  # atomic, and refuses to replace an existing file
            except FileExistsError:
                raise BlueprintVersionExists(model_id, version) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        _fsync_dir(final.parent)
        return final
