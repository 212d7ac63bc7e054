"""`r2 route --policies P,Q`: restrict the policies of one routing command (like `--models`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from helpers import HASH_DIM, tiny_checkpoint

from gateway.cli import main
from router_core import HashEmbedder
from router_core.policies import Policy


def routed(argv: list[str], capsys: Any) -> list[tuple[str, Any]]:
    capsys.readouterr()
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    return [(c["model"], c["budget"]) for c in map(json.loads, lines)]


def test_route_policies_restricts_the_choice(tmp_path: Path, capsys: Any) -> None:
    style = Policy("concise", max_tokens=200, instruction="Be brief.", kind="style")
    # "strong" is best at unlimited, then at the style, then at 100, then at 10.
    ckpt = tiny_checkpoint(tmp_path / "c", extra_policies=(style,),
                           quality={"strong": [0.3, 0.5, 0.9, 0.7], "weak": [0.1] * 4})
    np.save(tmp_path / "e.npy", HashEmbedder(HASH_DIM).embed(["a question", "another one"]))
    base = ["route", "--checkpoint", str(ckpt), "--embeddings", str(tmp_path / "e.npy"),
            "--input-tokens", "20", "--lambda", "0", "--json"]
    assert routed(base, capsys) == [("strong", "unlimited")] * 2
    assert routed([*base, "--policies", "10,100"], capsys) == [("strong", 100)] * 2
    assert routed([*base, "--policies", "concise, 10"], capsys) == [("strong", "concise")] * 2
    assert routed([*base, "--policies", "10", "--models", "weak"], capsys) == [("weak", 10)] * 2


def test_route_policies_names_an_unknown_policy(tmp_path: Path, capsys: Any) -> None:
    ckpt = tiny_checkpoint(tmp_path / "c")
    np.save(tmp_path / "e.npy", HashEmbedder(HASH_DIM).embed(["a question"]))
    base = ["route", "--checkpoint", str(ckpt), "--embeddings", str(tmp_path / "e.npy"),
            "--input-tokens", "20"]
    capsys.readouterr()
    assert main([*base, "--policies", "10,verbose"]) == 2
    err = capsys.readouterr().err
    assert "no policy 'verbose'" in err and "10, 100, unlimited" in err
    assert main([*base, "--policies", " , "]) == 2
