"""`python -m apexlm.data.prepare`: build the embedded corpora, tokenizer and instruction sets.

Writes under the data directory (`--data-dir`, `$APEXLM_DATA_DIR` or `<repo>/data`):
    text/{shakespeare,pycode}/{train,val}.jsonl   {"text", "source"} per document, split by name hash
    tokenizer/                                    byte-level BPE (save_pretrained) with chat template
    instructions/{train,val,eval}.jsonl           reasoning-gym conversations (see instructions.py)
    manifest.json                                 origins, licenses, sizes, hashes, token counts
    raw/, cache/tokens/                           downloaded archive and token-stream caches
Everything is built in a staging folder and moved into place only when all steps succeeded, so a failed
run leaves earlier data untouched. A rerun with the same options checks hashes and returns at once.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from apexlm.data import instructions, paths
from apexlm.data import manifest as mf
from apexlm.data.chat import encode_chat
from apexlm.data.documents import Document, split_documents
from apexlm.data.fileio import file_lock, write_jsonl
from apexlm.data.instructions import InstructionSizes, generate_splits
from apexlm.data.sources import pycode, shakespeare
from apexlm.errors import ConfigError, UserError

LAYOUT_VERSION = 2  # bump when the way outputs are derived changes, to force a rebuild
Log = Callable[[str], None]
DEFAULT_VOCAB_SIZE = 8192  # kept equal to apexlm.data.tokenizer.DEFAULT_VOCAB_SIZE (not imported: slow)


@dataclass(frozen=True)
class PrepareOptions:
    """What to build; recorded in the manifest as `params` (a change triggers a rebuild)."""

    vocab_size: int = DEFAULT_VOCAB_SIZE
    pycode_cap_bytes: int = pycode.DEFAULT_CAP_BYTES
    val_fraction: float = 0.05
    instructions: InstructionSizes = field(default_factory=InstructionSizes)

    def check(self) -> None:
        """Raise `ConfigError` for values that cannot produce usable data."""
        sizes = self.instructions
        if self.vocab_size < 512:
            raise ConfigError(f"vocab_size={self.vocab_size} is too small; use at least 512")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction={self.val_fraction} must be strictly between 0 and 1")
        if min(sizes.train, sizes.val, sizes.eval_per_task) < 1 or self.pycode_cap_bytes < 10_000:
            raise ConfigError("instruction sizes must be >= 1 and the pycode cap >= 0.01 MB; fix the options")

    def params(self) -> dict[str, Any]:
        """JSON-ready parameters, including the versions that change the output."""
        return {
            **asdict(self),
            "python": sys.version.split()[0],
            "reasoning_gym": version("reasoning-gym"),
            "layout": LAYOUT_VERSION,
        }


def _domain_docs(name: str, root: Path, opts: PrepareOptions) -> tuple[list[Document], dict[str, Any]]:
    if name == "shakespeare":
        archive = shakespeare.fetch_archive(paths.raw_dir(root))
        docs = shakespeare.read_documents(archive)
        return docs, {"origin": shakespeare.ORIGIN, "license": shakespeare.LICENSE}
    docs = pycode.read_documents(opts.pycode_cap_bytes)
    return docs, {"origin": pycode.origin(), "license": pycode.LICENSE}


def _build(root: Path, stage: Path, opts: PrepareOptions) -> dict[str, Any]:
    """Write every output into `stage`; returns the manifest (file paths relative to the data dir)."""
    from apexlm.data.packing import cached_stream  # torch / transformers: imported only when building
    from apexlm.data.tokenizer import save_tokenizer, tokenizer_fingerprint, train_tokenizer

    sources: dict[str, Any] = {}
    timings: dict[str, float] = {}
    splits: dict[str, dict[str, list[Document]]] = {}
    for name in paths.DOMAINS:
        t0 = time.perf_counter()
        docs, info = _domain_docs(name, root, opts)
        train, val = split_documents(docs, opts.val_fraction, salt=name)
        splits[name] = {"train": train, "val": val}
        for split, part in splits[name].items():
            write_jsonl(
                paths.text_file(stage, name, split), ({"text": d.text, "source": d.source} for d in part)
            )
        sources[name] = {
            **info,
            "file_count": len(docs),
            "bytes": sum(len(d.text.encode("utf-8")) for d in docs),
            "documents": {"train": len(train), "val": len(val)},
            "files": mf.file_entries(stage, [paths.text_file(stage, name, s) for s in paths.SPLITS]),
        }
        timings[name] = time.perf_counter() - t0

    t0 = time.perf_counter()
    texts = [d.text for name in paths.DOMAINS for d in splits[name]["train"]]
    tokenizer = train_tokenizer(texts, opts.vocab_size)
    save_tokenizer(tokenizer, paths.tokenizer_dir(stage))
    timings["tokenizer"] = time.perf_counter() - t0
    sources["tokenizer"] = {
        "origin": f"byte-level BPE trained by prepare on the train splits of {' + '.join(paths.DOMAINS)}",
        "license": "derived from the sources above",
        "vocab_size": len(tokenizer),
        "fingerprint": tokenizer_fingerprint(tokenizer),
        "file_count": 1,
        "files": mf.file_entries(stage, paths.tokenizer_dir(stage).iterdir()),
    }
    sources["tokenizer"]["bytes"] = sum(f["bytes"] for f in sources["tokenizer"]["files"].values())

    t0 = time.perf_counter()
    cache, fp = paths.token_cache_dir(root), tokenizer_fingerprint(tokenizer)
    for name in paths.DOMAINS:
        sources[name]["tokens"] = {
            s: int(len(cached_stream(tokenizer, d, cache, fp))) for s, d in splits[name].items()
        }
    timings["token_counts"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    records = generate_splits(opts.instructions)
    tokens, loss_tokens, per_task = {}, {}, {}
    for split, recs in records.items():
        write_jsonl(paths.instructions_file(stage, split), recs)
        encoded = [encode_chat(tokenizer, r["messages"]) for r in recs]
        tokens[split] = sum(len(e.input_ids) for e in encoded)
        loss_tokens[split] = sum(e.num_loss_tokens for e in encoded)
        per_task[split] = {
            t: sum(r["task"] == t for r in recs) for t in dict.fromkeys(r["task"] for r in recs)
        }
    inst_files = [paths.instructions_file(stage, s) for s in records]
    sources["instructions"] = {
        "origin": instructions.ORIGIN,
        "license": instructions.LICENSE,
        "file_count": len(inst_files),
        "bytes": sum(p.stat().st_size for p in inst_files),
        "records": {s: len(r) for s, r in records.items()},
        "records_per_task": per_task,
        "tokens": tokens,
        "loss_tokens": loss_tokens,
        "files": mf.file_entries(stage, inst_files),
    }
    timings["instructions"] = time.perf_counter() - t0
    return {
        "format": mf.FORMAT,
        "params": opts.params(),
        "sources": sources,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }


def _commit(stage: Path, root: Path, manifest: dict[str, Any]) -> None:
    """Move staged outputs into the data dir (tokenizer folder swapped whole), then the manifest."""
    for rel in mf.all_files(manifest):
        if rel.startswith("tokenizer/"):
            continue
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        (stage / rel).replace(target)
    tok_target = paths.tokenizer_dir(root)
    old = tok_target.with_name(".tokenizer.old")
    shutil.rmtree(old, ignore_errors=True)
    if tok_target.exists():
        tok_target.rename(old)
    paths.tokenizer_dir(stage).rename(tok_target)
    shutil.rmtree(old, ignore_errors=True)
    mf.save(root, manifest)


def _summary(root: Path, manifest: dict[str, Any], seconds: float) -> list[str]:
    s, t = manifest["sources"], manifest["timings_s"]
    lines = [f"prepared {root} in {seconds:.1f} s (manifest.json; token counting {t['token_counts']:.1f} s)"]
    for name in paths.DOMAINS:
        e = s[name]
        lines.append(
            f"  {name:12s} {e['file_count']} docs ({e['documents']['train']} train / "
            f"{e['documents']['val']} val), {e['bytes'] / 1e6:.2f} MB, tokens train "
            f"{e['tokens']['train']:,} / val {e['tokens']['val']:,}  [{t[name]:.1f} s]"
        )
    lines.append(
        f"  tokenizer    byte-level BPE, vocab {s['tokenizer']['vocab_size']}  [{t['tokenizer']:.1f} s]"
    )
    i = s["instructions"]
    lines.append(
        "  instructions "
        + ", ".join(f"{k} {n} ({i['tokens'][k]:,} tok)" for k, n in i["records"].items())
        + f", {len(i['records_per_task']['eval'])} tasks  [{t['instructions']:.1f} s]"
    )
    return lines


def prepare(
    data_dir: str | Path | None = None,
    force: bool = False,
    options: PrepareOptions | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Build the data directory unless it is already current; returns the manifest."""
    opts = options or PrepareOptions()
    opts.check()
    root = paths.resolve_data_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with file_lock(root / ".prepare.lock"):
        current = mf.load(root)
        if not force and mf.is_current(root, current, opts.params()):
            log(f"data up to date in {root} (hashes checked in {time.perf_counter() - start:.2f} s)")
            return current  # type: ignore[return-value]
        stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
        try:
            manifest = _build(root, stage, opts)
            _commit(stage, root, manifest)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    for line in _summary(root, manifest, time.perf_counter() - start):
        log(line)
    return manifest


def ensure_prepared(data_dir: str | None = None) -> Path:
    """The data directory, running `prepare` first when its manifest or any listed file is missing."""
    root = paths.resolve_data_dir(data_dir)
    if not mf.is_complete(root, mf.load(root)):
        prepare(root)
    return root


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; a data problem prints one line and exits with status 2."""
    ap = argparse.ArgumentParser(
        prog="python -m apexlm.data.prepare",
        description="Build the embedded corpora, tokenizer and instruction sets under the data directory.",
    )
    ap.add_argument("--data-dir", default=None, help=f"default: ${paths.ENV_VAR} or <repo>/data")
    ap.add_argument("--force", action="store_true", help="rebuild even when the data is current")
    ap.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    ap.add_argument("--pycode-mb", type=float, default=pycode.DEFAULT_CAP_BYTES / 1e6)
    ap.add_argument("--val-fraction", type=float, default=0.05)
    ap.add_argument("--instructions-train", type=int, default=InstructionSizes.train)
    ap.add_argument("--instructions-val", type=int, default=InstructionSizes.val)
    ap.add_argument("--eval-per-task", type=int, default=InstructionSizes.eval_per_task)
    args = ap.parse_args(argv)
    opts = PrepareOptions(
        args.vocab_size,
        int(args.pycode_mb * 1e6),
        args.val_fraction,
        InstructionSizes(args.instructions_train, args.instructions_val, args.eval_per_task),
    )
    try:
        prepare(args.data_dir, force=args.force, options=opts)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
