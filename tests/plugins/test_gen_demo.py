"""``sdeflow demo`` (the plugin's demo_main and its SUBCOMMANDS registration), tiny runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import sdeflow_generative as gen
from sdeflow_generative.demo import demo_main


def test_registration() -> None:
    help_text, add_args, run = gen.SUBCOMMANDS["demo"]
    assert "generative" in help_text
    ns = add_args(argparse.ArgumentParser()).parse_args(["--data", "gmm", "--steps", "3"])
    assert ns.data == "gmm" and ns.steps == 3 and callable(run)


def test_demo_2d_writes_figures_and_metrics(tmp_path: Path) -> None:
    out = tmp_path / "moons"
    argv = ["--data", "moons", "--steps", "20", "--out", str(out), "--no-progress", "--quick"]
    assert demo_main(argv) == 0
    for f in ("samples.png", "trajectories.png", "density.png", "metrics.json", "checkpoint.pt"):
        assert (out / f).stat().st_size > 0, f
    m = json.loads((out / "metrics.json").read_text())
    assert m["train"]["steps"] == 20 and m["mmd_floor_data_vs_data"] > 0
    assert set(m["mmd_ratio"]) == {"ode_nfe20", "ode_nfe100", "sde_nfe20"}
    # 20 steps is untrained: the samples are far from the data
    assert m["mmd_ratio"]["ode_nfe100"] > 1.5


def test_demo_digits_tiny(tmp_path: Path) -> None:
    out = tmp_path / "digits"
    rc = demo_main(["--data", "digits", "--steps", "2", "--out", str(out), "--no-progress",
                    "--samples-per-class", "2", "--batch-size", "8", "--quick"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["classifier_test_accuracy"] > 0.9  # logistic regression on real 8x8 digits
    assert set(m["guidance"]) == {"w1_ode_heun_nfe40", "w3_ode_heun_nfe40", "w3_sde_em_nfe10"}
    for f in ("digits_w1.png", "digits_w3.png", "digits_real.png"):
        assert (out / f).stat().st_size > 0


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        demo_main(["--data", "spirals"])
    with pytest.raises(SystemExit):
        demo_main(["--steps", "0", "--out", str(tmp_path)])
