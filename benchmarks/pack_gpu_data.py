"""Pack the prepared corpora for the GPU machine: uint16 token arrays + the tokenizer, a few MB in all.

    python benchmarks/pack_gpu_data.py                  # → benchmarks/gpu_data/ (git-ignored, carried)

Writes `<out>/{shakespeare,pycode}_{train,val}.npy` (uint16 token streams, documents joined by eos,
exactly the streams the datamodule packs), `<out>/tokenizer/` (the project tokenizer files) and
`<out>/meta.json` (vocab, special ids, token counts, tokenizer fingerprint). The GPU image lacks
`datasets` and the raw sources; gpu_check.py reads only these files. Runs `prepare` first if needed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

from apexlm.data.packing import cached_stream  # noqa: E402
from apexlm.data.paths import DOMAINS, SPLITS, resolve_data_dir, token_cache_dir, tokenizer_dir  # noqa: E402
from apexlm.data.tokenizer import load_tokenizer, tokenizer_fingerprint  # noqa: E402

MAX_BYTES = 30 * 2**20


def pack_gpu_data(out: Path, data_dir: str | None = None, max_tokens: int | None = None) -> dict:
    """Write the arrays, the tokenizer and meta.json into `out`; returns the meta record."""
    from apexlm.data.prepare import ensure_prepared
    from apexlm.data.text_data import embedded_documents

    root = ensure_prepared(resolve_data_dir(data_dir))
    tok = load_tokenizer(tokenizer_dir(root))
    if len(tok) > np.iinfo(np.uint16).max + 1:
        raise SystemExit(f"vocab {len(tok)} does not fit uint16")
    fp = tokenizer_fingerprint(tok)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for domain in DOMAINS:
        for split in SPLITS:
            stream = cached_stream(tok, embedded_documents(domain, split, root), token_cache_dir(root), fp)
            if max_tokens is not None:
                stream = stream[:max_tokens]
            np.save(out / f"{domain}_{split}.npy", stream.astype(np.uint16))
            counts[f"{domain}_{split}"] = int(len(stream))
    tok_out = out / "tokenizer"
    shutil.rmtree(tok_out, ignore_errors=True)
    shutil.copytree(tokenizer_dir(root), tok_out)
    meta = {"vocab_size": len(tok), "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
            "bos_token_id": tok.bos_token_id, "tokenizer_fingerprint": fp, "tokens": counts,
            "dtype": "uint16"}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    meta["bytes"] = size
    if size > MAX_BYTES:
        raise SystemExit(f"{out} holds {size / 2**20:.1f} MB, over the {MAX_BYTES / 2**20:.0f} MB carry budget; "
                         "use --max-tokens")
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "gpu_data"))
    p.add_argument("--data-dir", default=None, help="prepared data dir (default: $APEXLM_DATA_DIR or ./data)")
    p.add_argument("--max-tokens", type=int, default=None, help="cap each split (tests)")
    a = p.parse_args(argv)
    meta = pack_gpu_data(Path(a.out), a.data_dir, a.max_tokens)
    print(f"{a.out}: {meta['bytes'] / 2**20:.1f} MB; vocab {meta['vocab_size']}; tokens {meta['tokens']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
