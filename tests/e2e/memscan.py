"""Look for byte strings in a live process's memory, its environment, files and logs."""

from __future__ import annotations

from pathlib import Path


def encodings(text: str) -> list[bytes]:
    """The forms a string can take in memory: ASCII/UTF-8, UTF-16 and UTF-32 (CPython keeps
    non-Latin-1 strings in the wider forms), little-endian as on this machine."""
    return [text.encode(), text.encode("utf-16-le"), text.encode("utf-32-le")]


def readable_regions(pid: int) -> list[tuple[int, int, str]]:
    regions = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split()
        start, end = (int(x, 16) for x in parts[0].split("-"))
        perms = parts[1]
        name = parts[5] if len(parts) > 5 else ""
        if perms.startswith("r") and name not in ("[vvar]", "[vsyscall]", "[vvar_vclock]"):
            regions.append((start, end, name))
    return regions


def scan_memory(pid: int, needles: list[bytes]) -> tuple[set[bytes], int]:
    """Which of `needles` occur anywhere in the process's readable memory; and bytes read."""
    found: set[bytes] = set()
    longest = max(len(n) for n in needles)
    total = 0
    chunk = 1 << 20
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for start, end, _name in readable_regions(pid):
            tail = b""
            pos = start
            while pos < end:
                size = min(chunk, end - pos)
                try:
                    mem.seek(pos)
                    data = mem.read(size)
                except (OSError, ValueError):
                    break  # a guard page or a mapping that vanished: skip the rest of it
                if not data:
                    break
                total += len(data)
                window = tail + data
                for n in needles:
                    if n not in found and n in window:
                        found.add(n)
                tail = data[-(longest - 1) :] if longest > 1 else b""
                pos += len(data)
    return found, total


def scan_files(root: Path, needles: list[bytes]) -> dict[str, set[bytes]]:
    """Every regular file under `root` (or `root` itself) -> the needles it contains."""
    paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
    out: dict[str, set[bytes]] = {}
    for p in paths:
        data = p.read_bytes()
        hits = {n for n in needles if n in data}
        if hits:
            out[str(p)] = hits
    return out
