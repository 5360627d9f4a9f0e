"""Copy the prepared data directory's training files for the GPU machine (~28 MB), so train.py runs there as here.

    python benchmarks/pack_gpu_data.py                  # → benchmarks/gpu_data/ (git-ignored, carried)

The GPU image lacks `datasets`, `reasoning-gym` and the raw sources, so it cannot run `prepare`; train.py
only needs a data directory whose manifest lists files that exist (`manifest.is_complete`). This copies
exactly those files (corpora, tokenizer, instruction sets; not the raw archive, which only `prepare`
reads) plus the token-stream cache (so the GPU run does not re-tokenize), and checks the copy.
gpu_check.sh points `APEXLM_DATA_DIR` at it. Runs `prepare` first if the source is not prepared.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from apexlm.data import manifest as mf  # noqa: E402
from apexlm.data.paths import MANIFEST, resolve_data_dir  # noqa: E402

MAX_BYTES = 40 * 2**20   # the carry budget is 64 MiB in all; the wheels take ~24 MB


def pack_gpu_data(out: Path, data_dir: str | None = None) -> dict:
    """Copy the manifest's files and the token cache from the prepared data dir into `out`; return a record."""
    from apexlm.data.prepare import ensure_prepared

    root = ensure_prepared(resolve_data_dir(data_dir))
    manifest = json.loads((root / MANIFEST).read_text())
    files = list(mf.all_files(manifest))
    cache = sorted(p.relative_to(root).as_posix() for p in (root / "cache").rglob("*") if p.is_file())
    if out.exists():
        shutil.rmtree(out)
    for rel in [*files, *cache]:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, out / rel)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    if not mf.is_complete(out, mf.load(out)):
        raise SystemExit(f"{out}: the copied manifest lists files that are missing; rerun prepare on {root}")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    if size > MAX_BYTES:
        raise SystemExit(f"{out} holds {size / 2**20:.1f} MB, over the {MAX_BYTES / 2**20:.0f} MB carry budget")
    return {"source": str(root), "files": len(files), "cache_files": len(cache), "bytes": size}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "gpu_data"))
    p.add_argument("--data-dir", default=None, help="prepared data dir (default: $APEXLM_DATA_DIR or ./data)")
    a = p.parse_args(argv)
    rec = pack_gpu_data(Path(a.out), a.data_dir)
    print(f"{a.out}: {rec['bytes'] / 2**20:.1f} MB; {rec['files']} data files + {rec['cache_files']} cache files "
          f"from {rec['source']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
