#!/usr/bin/env python3
"""Fails when two top-level modules of one crate import each other, directly or
through others (issue 9: no import cycle between modules of a crate).

A module is a top-level `src/<name>.rs` or `src/<name>/`; an import is any
`crate::<name>` path (or a `use crate::{<name>, ...}` group) in non-comment,
non-test code of another module."""
import os
import re
import sys

ROOTS = [os.path.join("crates", c, "src") for c in sorted(os.listdir("crates"))] + ["loadtest/src"]


def modules(src):
    found = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            parts = os.path.relpath(path, src)[:-3].split("/")
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts in (["lib"], ["main"]):
                continue
            found.setdefault(parts[0], []).append(path)
    return found


def imports(path, names):
    text = "\n".join(l for l in open(path).read().split("\n") if not l.strip().startswith("//"))
    text = re.sub(r"#\[cfg\(test\)\]\s*mod tests\s*\{.*", "", text, flags=re.S)
    used = set(re.findall(r"crate::([a-z_0-9]+)", text))
    for group in re.findall(r"use crate::\{([^}]*)\}", text):
        used.update(re.findall(r"\b([a-z_0-9]+)\b", group))
    return used & names


def cycles(graph):
    found = set()

    def walk(start, node, path):
        for nxt in graph[node]:
            if nxt == start:
                found.add(tuple(sorted(path)))
            elif nxt not in path and len(path) < 8:
                walk(start, nxt, path + [nxt])

    for m in graph:
        walk(m, m, [m])
    return sorted(found)


failed = False
for src in ROOTS:
    if not os.path.isdir(src):
        continue
    mods = modules(src)
    names = set(mods)
    graph = {m: set() for m in mods}
    for m, files in mods.items():
        for path in files:
            graph[m] |= imports(path, names) - {m}
    for cycle in cycles(graph):
        failed = True
        print(f"{src}: modules import each other: {' <-> '.join(cycle)}")
if failed:
    sys.exit(1)
print("no import cycles between modules")
