"""Builds ``package_docs.jsonl``: real long benign English documents for the injection
classifier, cut from the documentation that Python packages ship.

    python benchmarks/data/make_package_docs.py [--sdists DIR] [--out PATH]

Sources, all read from this machine (no network):

- the long description (the README) in the ``METADATA`` of every distribution installed
  in the running interpreter's ``sys.path`` (``importlib.metadata``);
- with ``--sdists DIR``, the ``README*``, ``CHANGES*``/``CHANGELOG*``/``HISTORY*`` and
  ``docs/**/*.rst|md|txt`` files inside the source archives in DIR (fetched beforehand
  with ``pip download --no-deps --no-binary :all: <package>``).

Only distributions under a permissive licence (MIT, BSD, Apache, PSF, ISC, MPL, public
domain) are kept; each row records its package, version, file and licence. Packages about
prompt injection or red-teaming (their READMEs quote attacks) and this project's own are
left out. Markup, code blocks, tables and link targets are removed; paragraphs are joined
into chunks of 250 to 1,500 characters (documents, tool results, e-mail bodies are that
long), each with at least 100 letters (the classifier's gate). At most ``--per-package``
chunks per package, those that use the grammar's trigger words first. One package in five
(by a hash of its name) is held back as ``split = "check"``: never trained on, read for
the final check only.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import random
import re
import sys
import tarfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from middlewares.guard.classifier import TRIGGER_WORDS, letters

OUT = Path(__file__).parent / "package_docs.jsonl"
EXCLUDED = {"onion-llm", "onion-acme-layers", "ai-injection-guard", "garak", "llm-guard", "rebuff"}
PERMISSIVE = re.compile(r"MIT|BSD|Apache|PSF|Python Software|ISC|MPL|Mozilla|public domain|0BSD|Unlicense", re.I)
DOC_FILE = re.compile(r"(?:^|/)(?:README|CHANGES|CHANGELOG|HISTORY|NEWS)[^/]*$|(?:^|/)docs?/.*\.(?:rst|md|txt)$", re.I)


def licence_of(meta: importlib.metadata.PackageMetadata) -> str:
    expression = meta.get("License-Expression") or ""
    if expression:
        return expression.strip()
    text = (meta.get("License") or "").strip()
    if text and len(text) < 60 and "\n" not in text:
        return text
    for classifier in meta.get_all("Classifier") or []:
        if classifier.startswith("License ::"):
            return classifier.split("::")[-1].strip()
    return ""


def clean(text: str) -> list[str]:
    """Paragraphs of prose from Markdown or reStructuredText (code, tables, markup dropped)."""
    text = re.sub(r"```.*?```|~~~.*?~~~", "\n", text, flags=re.S)
    text = re.sub(r"<!--.*?-->|<[^>\n]+>", " ", text, flags=re.S)
    lines, out, skip_indent = text.split("\n"), [], False
    for line in lines:
        stripped = line.strip()
        if skip_indent:
            if not stripped or line[:1] in " \t":
                continue
            skip_indent = False
        if stripped.endswith("::") or re.match(
            r"\.\. (?:code|sourcecode|literalinclude|image|figure|toctree)", stripped
        ):
            skip_indent = True
            stripped = stripped.rstrip(":")
            if stripped.startswith(".."):
                continue
        if stripped.startswith((".. ", "|", "+-", "+=", ">>>", "$ ", "[!", "![", ":")) or line.startswith(
            ("    ", "\t")
        ):
            out.append("")
            continue
        if re.fullmatch(r"[=\-~^*#`'\"+_.]{3,}", stripped):
            out.append("")
            continue
        out.append(stripped)
    paragraphs = []
    for block in re.split(r"\n\s*\n", "\n".join(out)):
        block = " ".join(block.split())
        block = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", block)
        block = re.sub(r"`([^`<]*?)\s*<[^>]+>`_+", r"\1", block)
        block = re.sub(r":\w+:`([^`]*)`", r"\1", block)
        block = re.sub(r"https?://\S+", "", block)
        block = re.sub(r"[`*_]{1,3}(?=\w)|(?<=\w)[`*_]{1,3}|^#+\s*", "", block).strip()
        if block:
            paragraphs.append(block)
    return paragraphs


def chunks(paragraphs: list[str]) -> list[str]:
    out, current = [], []
    for paragraph in paragraphs:
        if len(paragraph) > 1500:
            continue
        if current and sum(len(p) + 1 for p in current) + len(paragraph) > 1500:
            out.append("\n".join(current))
            current = []
        current.append(paragraph)
        if sum(len(p) + 1 for p in current) >= 250 and len(paragraph) >= 80:
            out.append("\n".join(current))
            current = []
    if current:
        out.append("\n".join(current))
    return [c for c in out if 250 <= len(c) <= 1500 and letters(c) >= 100 and _prose(c)]


def _prose(text: str) -> bool:
    # Mostly words, not identifiers, numbers or leftover markup.
    words = text.split()
    plain = sum(1 for w in words if re.fullmatch("[A-Za-z][a-z'\u2019-]*[,.;:!?)]?", w))
    return len(words) >= 30 and plain / len(words) >= 0.6


def check_split(package: str) -> bool:
    return int(hashlib.sha1(package.lower().encode()).hexdigest(), 16) % 5 == 0


def sdist_files(path: Path):
    if path.suffix == ".zip" or path.suffix == ".whl":
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if DOC_FILE.search(name.split("/", 1)[-1]):
                    yield name, archive.read(name).decode("utf-8", "replace")
        return
    with tarfile.open(path) as archive:
        for member in archive.getmembers():
            if member.isfile() and DOC_FILE.search(member.name.split("/", 1)[-1]) and member.size < 400_000:
                handle = archive.extractfile(member)
                if handle:
                    yield member.name, handle.read().decode("utf-8", "replace")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sdists", type=Path)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--per-package", type=int, default=40)
    args = parser.parse_args()
    by_package: dict[str, dict] = {}
    for dist in importlib.metadata.distributions():
        meta = dist.metadata
        name = (meta.get("Name") or "").strip()
        key = name.lower().replace("_", "-")
        licence = licence_of(meta)
        if not name or key in EXCLUDED or key in by_package or not PERMISSIVE.search(licence):
            continue
        body = meta.get_payload() or meta.get("Description") or ""  # type: ignore[attr-defined]
        by_package[key] = {"package": name, "version": meta.get("Version"), "licence": licence, "files": []}
        by_package[key]["files"].append(("METADATA", body))
    if args.sdists:
        installed = {
            d.metadata.get("Name", "").lower().replace("_", "-"): d for d in importlib.metadata.distributions()
        }
        for path in sorted(args.sdists.iterdir()):
            match = re.match(r"(.+?)-(\d[^-]*?)(?:\.tar\.gz|\.zip|-py.*\.whl)$", path.name)
            if not match:
                continue
            key = match.group(1).lower().replace("_", "-")
            if key in EXCLUDED:
                continue
            licence = ""
            with tarfile.open(path) if path.name.endswith(".tar.gz") else zipfile.ZipFile(path) as archive:
                names = archive.getnames() if isinstance(archive, tarfile.TarFile) else archive.namelist()
                pkg_info = next((n for n in names if n.count("/") == 1 and n.endswith("/PKG-INFO")), None)
                if pkg_info:
                    raw = (
                        archive.extractfile(pkg_info).read()  # type: ignore[union-attr]
                        if isinstance(archive, tarfile.TarFile)
                        else archive.read(pkg_info)
                    ).decode("utf-8", "replace")
                    from email.parser import Parser

                    licence = licence_of(Parser().parsestr(raw, headersonly=True))  # type: ignore[arg-type]
            if not licence and key in installed:
                licence = licence_of(installed[key].metadata)
            if not PERMISSIVE.search(licence):
                print(f"skipped {path.name}: licence {licence!r}", file=sys.stderr)
                continue
            entry = {"package": match.group(1), "version": match.group(2), "licence": licence, "files": []}
            entry["files"] = [(name.split("/", 1)[-1], text) for name, text in sdist_files(path)]
            by_package[key] = entry  # the sdist's files include its README, replacing METADATA's copy
    rows, seen = [], set()
    for key in sorted(by_package):
        entry = by_package[key]
        found = []
        for file, text in entry["files"]:
            for chunk in chunks(clean(text)):
                digest = hashlib.sha1(chunk.encode()).hexdigest()
                if digest not in seen:
                    seen.add(digest)
                    found.append((file, chunk))
        rng = random.Random(key)
        rng.shuffle(found)
        found.sort(key=lambda item: not TRIGGER_WORDS.search(item[1]))
        for file, chunk in found[: args.per_package]:
            rows.append(
                {
                    "text": chunk,
                    "label": 0,
                    "lang": "en",
                    "source": "package-docs",
                    "package": entry["package"],
                    "version": entry["version"],
                    "file": file,
                    "licence": entry["licence"],
                    "split": "check" if check_split(key) else "train",
                }
            )
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    packages = {r["package"] for r in rows}
    trigger = sum(1 for r in rows if TRIGGER_WORDS.search(r["text"]))
    check = sum(1 for r in rows if r["split"] == "check")
    print(f"{len(rows)} chunks from {len(packages)} packages ({trigger} with trigger words, {check} held back)")


if __name__ == "__main__":
    main()
