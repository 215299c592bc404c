# Copyright (c) mmpsearch contributors. All rights reserved.
"""Checks on what a tool wrote or left alone."""
import hashlib
from pathlib import Path
from typing import Dict, Union


def tree_digest(root: Union[str, Path]) -> Dict[str, str]:
    """Every file under ``root`` (recursively): its path relative to
    ``root`` -> the SHA-256 of its bytes. Two equal digests mean the same
    files with the same contents, e.g. a folder a tool must only read, or
    two renderings that must come out alike."""
    root = Path(root)
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob('*')) if p.is_file()
    }
