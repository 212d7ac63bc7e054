"""Provenance and licence notice of a checkpoint converted from the published R2-Router release.

The release is MIT-licensed, and the MIT licence asks that its notice travel with every copy
and substantial portion. A converted checkpoint is one, so the importer records, in the
manifest's `provenance` (a free-form object the schema already carries, so older readers are
unaffected), where the heads came from, the licence with its notice, and the sha256 of every
original file it converted; and writes the same as a README.md beside the arrays.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from .checkpoint import sha256_file

RELEASE_SOURCE = "https://github.com/UCF-ML-Research/R2-Router"
RELEASE_LICENSE = "MIT"
README = "README.md"
#: The release's README says "MIT License" and names no copyright holder; the holder is given
#: as the authors of the source repository.
MIT_NOTICE = """\
MIT License

Copyright (c) the R2-Router authors (https://github.com/UCF-ML-Research/R2-Router)

Permission is hereby granted, free of charge, to any person obtaining a copy of this software
and associated documentation files (the "Software"), to deal in the Software without
restriction, including without limitation the rights to use, copy, modify, merge, publish,
distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""


def release_provenance(root: Path, src: str, dest: str, method: str) -> dict[str, Any]:
    """The manifest's `provenance` for a conversion of the release folder `root`.

    `original_files` maps each data file of the release (path under its `r2_router/` folder,
    Python code excluded) to its sha256; `converted_with` is the command that reproduces it.
    """
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and p.suffix not in (".py", ".pyc"))
    return {
        "source": RELEASE_SOURCE,
        "license": RELEASE_LICENSE,
        "license_notice": MIT_NOTICE,
        "method": method,
        "converted_with": " ".join(["r2", "import-checkpoint", shlex.quote(src),
                                    shlex.quote(dest), "--trust-pickle"]),
        "original_files": {f"r2_router/{p.relative_to(root).as_posix()}": sha256_file(p)
                           for p in files},
    }


def write_release_readme(dest: Path, provenance: dict[str, Any], models: int,
                         policies: int, embedder: str) -> Path:
    """Write README.md (what this is, the licence notice, provenance) into `dest`."""
    rows = "\n".join(f"| `{name}` | `{digest}` |"
                     for name, digest in provenance["original_files"].items())
    text = f"""\
# r2-release: the published R2-Router, converted

The released R2-Router heads ({models} models x {policies} budgets, Ridge regressions over
{embedder} embeddings), converted by this project's `r2 import-checkpoint` from the release's
pickled joblib files into plain arrays (`heads.npz`, loaded with `allow_pickle=False`) and a
JSON manifest. Nothing here is a pickle; the gateway loads only this format.

Serve it with `gateway.yaml` (it points here) and an embedder serving {embedder}
(`vllm serve {embedder} --runner pooling`), or route precomputed embeddings:
`r2 route --checkpoint checkpoints/r2-release --embeddings X.npy --input-tokens N --json`.

## Provenance
- Source: {provenance["source"]} (the `r2_router/` folder of the release)
- Method: {provenance["method"]}
- Converted with (from the repository root, the release unpacked at the given path):

  ```bash
  {provenance["converted_with"]}
  ```

  The same record, with the sha256 of every original file below, is in `manifest.json` under
  `provenance`. Numeric budgets are served with the protocol recorded there
  (`provenance.protocol`, default `r2bench`: the instruction the release's benchmark data was
  collected with, appended to the user turn, `max_tokens = N + 10`; `--protocol generate` for
  its `generate()` system message without a cap).
- Then calibrated for `x-r2-tradeoff` / `default_tradeoff` on the release's 300 parity
  embeddings (the manifest's `tradeoff` table):

  ```bash
  r2 calibrate --checkpoint checkpoints/r2-release \
    --embeddings tests/data/parity_embeddings.npy --input-tokens tests/data/parity_cases.jsonl
  ```

| original file | sha256 |
| --- | --- |
{rows}

## Licence
The converted heads are a substantial portion of the release, which is distributed under the
{provenance["license"]} licence (as its README states; it names no copyright holder, so the
authors of the source repository are named). Its notice:

```text
{provenance["license_notice"]}```
"""
    path = dest / README
    path.write_text(text)
    return path
