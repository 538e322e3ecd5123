"""Is a server on the latest minor of its major, and is that major still supported? Data: data/versions.yaml."""

from __future__ import annotations

import functools
import re
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from engines.security.registry import Unknowable, Verdict, failed, passed

DATA = Path(__file__).with_name("data") / "versions.yaml"


@functools.lru_cache(maxsize=1)
def release_data() -> dict[str, Any]:
    """The parsed versions file."""
    data: dict[str, Any] = yaml.safe_load(DATA.read_text())
    return data


def parse(version: str) -> tuple[int, ...]:
    """'10.11.19-MariaDB-0+deb12u1' -> (10, 11, 19); '15.20 (Debian ...)' -> (15, 20)."""
    m = re.match(r"\s*(\d+(?:\.\d+)*)", version)
    if not m:
        raise Unknowable(f"cannot read a version number from {version!r}")
    return tuple(int(p) for p in m.group(1).split("."))


def check_version(product: str, version: str, major_parts: int, today: date | None = None) -> Verdict:
    """Compare ``version`` with the file's entry for its major (the first ``major_parts`` numbers)."""
    numbers = parse(version)
    major = ".".join(str(n) for n in numbers[:major_parts])
    entry = release_data().get(product, {}).get(major)
    compiled = release_data()["compiled"]
    if entry is None:
        raise Unknowable(f"no release data for {product} {major} in versions.yaml (compiled {compiled})")
    today = today or date.today()
    eol = entry.get("eol")
    evidence: dict[str, Any] = {"version": version.split()[0], "major": major, "data_compiled": compiled}
    if eol and date.fromisoformat(str(eol)) < today:
        return failed(f"upgrade to a supported {product} major version (this one reached end of life on {eol})",
                      end_of_life=str(eol), **evidence)
    latest = entry.get("latest")
    if latest is None:
        raise Unknowable(f"versions.yaml has no latest minor for {product} {major} (compiled {compiled})")
    evidence["latest_known"] = latest
    if numbers < parse(str(latest)):
        return failed(f"upgrade {product} to {latest} (a minor update: same major, bug and security fixes)",
                      **evidence)
    return passed(**evidence)
