"""Every benchmark's quick mode runs and writes results of the documented shape.

Benchmarks are not tests (STYLE.md rule 10): nothing here asserts a time, only
that each script runs end to end and its JSON has the keys, positive numbers
and verdicts that ``bench/run_all.py`` and the README rely on.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench import batching, coldstart, quality, run_all, scaling, serving, tv_compare
from bench.common import free_ports, stats

VERDICTS = {"met", "missed", "skipped", "not available", "error", "-"}


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="module")
def results(out: Path) -> dict[str, Any]:
    """Each script's quick run, in this process, into one folder."""
    argv = ["--quick", "--out", str(out)]
    return {
        "quality": quality.main(argv),
        "serving": serving.main(argv),
        "batching": batching.main(argv),
        "tv_compare": tv_compare.main(argv),
        "scaling": scaling.main(argv),
        "coldstart": coldstart.main(argv),
    }


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def check_stats(block: dict[str, Any]) -> None:
    assert block["n"] >= 1
    for key in ("median_ms", "p99_ms", "mean_ms", "min_ms"):
        assert positive(block[key]), (key, block)
    assert block["min_ms"] <= block["median_ms"] <= block["p99_ms"]


def check_meta(meta: dict[str, Any]) -> None:
    for key in ("date", "cpu_model", "cpus", "python", "numpy", "onnxruntime", "note"):
        assert meta[key], key
    assert isinstance(meta["training_jobs"], list)


@pytest.mark.parametrize("name", list(run_all.SCRIPTS))
def test_each_script_writes_its_json_and_markdown(
    name: str, results: dict[str, Any], out: Path
) -> None:
    on_disk = json.loads((out / f"{name}.json").read_text())
    assert on_disk.keys() == results[name].keys()
    assert (out / f"{name}.md").read_text().count("|") > 10  # a markdown table


def test_quality(results: dict[str, Any]) -> None:
    rows = results["quality"]["rows"]
    assert set(rows) == {"denoising", "inpainting"}
    for row in rows.values():
        for model in quality.MODELS:
            assert positive(row[model]["seconds"])
            assert math.isfinite(row[model]["psnr_db"])


def test_serving(results: dict[str, Any]) -> None:
    r = results["serving"]
    check_meta(r["meta"])
    assert [c["case"] for c in r["cases"]] == ["tv / score off", "tv / score on"]
    for case in r["cases"]:
        check_stats(case["inprocess"])
        check_stats(case["engine_reconstruct_only"])
        for key in serving.SERVERS:
            check_stats(case[key])
            assert positive(case[key]["ratio_vs_inprocess"])
            assert case[key]["max_abs_diff_vs_inprocess"] < 1e-3  # HTTP returns the same image
        assert isinstance(case["target"]["met"], bool)
        assert positive(case["target"]["allowed_overhead_ms"])
    if r["celery"]["available"]:  # a Celery backend and redis-server: (c) was measured
        for case in r["cases"]:
            check_stats(case["celery"])
            assert case["celery"]["max_abs_diff_vs_inprocess"] < 1e-3
    else:
        assert "not available" in r["celery"]["reason"]


def test_batching(results: dict[str, Any]) -> None:
    r = results["batching"]
    check_meta(r["meta"])
    assert r["clients"] == [1, 4]
    (workload,) = r["workloads"]
    assert set(workload["settings"]) == set(r["settings"]) and len(r["settings"]) == 2
    for runs in workload["settings"].values():
        assert [run["clients"] for run in runs] == [1, 4]
        for run in runs:
            assert run["error_count"] == 0, run["errors"]
            assert positive(run["throughput_per_s"]) and run["completed"] >= 1
            assert run["mean_batch_size"] >= 1
            assert positive(run["server_mean_ms"])
            check_stats(run["latency"])
    assert set(workload["engine_per_item_ms"]) == {"1", "4"}
    assert all(positive(v) for v in workload["engine_per_item_ms"].values())
    for rss in workload["rss_mb"].values():
        assert positive(rss["VmRSS"]) and rss["VmHWM"] >= rss["VmRSS"]


def test_tv_compare(results: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    r = results["tv_compare"]
    check_meta(r["meta"])
    (problem,) = r["problems"]
    ours, rival = problem["ours"], problem["rival"]
    for solver in (ours, rival):
        assert positive(solver["time_to_within_ms"]) and solver["iterations"] >= 1
        assert solver["best_psnr_db"] - solver["psnr_db_at_iterations"] <= tv_compare.MARGIN_DB
        assert all(positive(p["ms"]) for p in solver["curve"])
    assert positive(ours["lam"]) and positive(ours["ms_per_iteration"])
    assert positive(rival["weight"]) and positive(rival["default_stop"]["ms"])
    assert {t["verdict"] for t in r["targets"]} <= VERDICTS


def test_deepinv_environment_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The main venv has the CPU torch wheel, beside which deepinv cannot import (DATA.md):
    # without an environment elsewhere, the deepinv rows are skipped with a pointer.
    monkeypatch.delenv("DEEPINV_PYTHON", raising=False)
    monkeypatch.setattr(tv_compare, "DEEPINV_VENV", tmp_path / "no-venv")
    assert tv_compare.deepinv_python(None) is None
    assert "see bench/README.md" in tv_compare.DEEPINV_SKIPPED
    python = tmp_path / "python"
    python.touch()
    assert tv_compare.deepinv_python(str(python)) == str(python)
    monkeypatch.setenv("DEEPINV_PYTHON", str(python))
    assert tv_compare.deepinv_python(None) == str(python)


def test_scaling(results: dict[str, Any]) -> None:
    r = results["scaling"]
    check_meta(r["meta"])
    assert {(s["model"], s["family"]) for s in r["series"]} == {
        ("pinv", "denoising"), ("tv", "denoising")
    }
    for s in r["series"]:
        assert [row["size"] for row in s["rows"]] == [32, 64]
        for row in s["rows"]:
            assert row["pixels"] == row["size"] ** 2
            check_stats(row)
        assert math.isfinite(s["exponent"])


def test_exponent_fit_recovers_a_power_law() -> None:
    pixels = [64**2, 128**2, 256**2]
    assert scaling.exponent(pixels, [3.0 * p**1.5 for p in pixels]) == pytest.approx(1.5)
    assert scaling.exponent(pixels[:1], [1.0]) is None


def test_coldstart(results: dict[str, Any]) -> None:
    r = results["coldstart"]
    check_meta(r["meta"])
    assert positive(r["cold_start_s"]["median"]) and len(r["cold_start_s"]["runs"]) == 1
    for key in ("import_s", "zoo_load_s", "engine_s"):
        assert positive(r["stages_s"][key])
    for when in ("ready", "after_requests"):
        assert positive(r["memory_mib"][when]["VmRSS"])
    assert {t["verdict"] for t in r["targets"]} <= {"met", "missed"}


def test_run_all_collects_targets_and_one_page(results: dict[str, Any], out: Path) -> None:
    rows = run_all.targets(results)
    assert rows and all(set(t) == {"target", "measured", "verdict"} for t in rows)
    assert {t["verdict"] for t in rows} <= VERDICTS
    meta = results["serving"]["meta"]
    page = run_all.markdown(meta, results, {}, out, quick=True)
    assert page.startswith("# EquiRecon benchmarks")
    for title in run_all.TITLES.values():
        assert f"## {title}" in page


def test_stats_are_milliseconds() -> None:
    s = stats([0.001, 0.002, 0.003])
    assert s["n"] == 3 and s["median_ms"] == pytest.approx(2.0)
    with pytest.raises(ValueError):
        stats([])


def test_prometheus_samples_match_labels_in_any_order() -> None:
    text = (
        'equirecon_batch_size_sum 12.0\n'
        'x_sum{method="GET",route="/v1/reconstructions"} 9.5\n'
        'x_sum{method="POST",route="/v1/reconstructions"} 3.5\n'
        'x_count{route="/v1/reconstructions",method="POST"} 7.0\n'
    )
    assert batching._metric(text, "equirecon_batch_size_sum") == 12.0
    assert batching._metric(text, "x_sum", batching._POST) == 3.5
    assert batching._metric(text, "x_count", batching._POST) == 7.0
    assert batching._metric(text, "missing") == 0.0


def test_servers_started_together_get_distinct_ports() -> None:
    ports = free_ports(64)
    assert len(set(ports)) == 64 and all(1024 <= p < 65536 for p in ports)


def test_memory_of_an_exited_server_is_an_error_not_an_empty_reading() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        assert batching.rss_mb(os.getpid())["VmRSS"] > 0
        deadline = time.monotonic() + 30  # until it has exited, unreaped (a zombie)
        while "zombie" not in Path(f"/proc/{proc.pid}/status").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(RuntimeError, match="not running"):
            batching.rss_mb(proc.pid)
    finally:
        proc.wait()


def test_rotation_fidelity(tmp_path: Path) -> None:
    """Training-side figures (not in run_all): the three-shear rotation keeps the images
    that bilinear interpolation blurs, and the PSF phantoms are nearly rotation-invariant."""
    from bench import rotation_fidelity

    r = rotation_fidelity.main(["--quick", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "rotation_fidelity.json").read_text()) == r
    rows = r["psnr_db"]
    assert set(rows) == {"ellipses, point-sampled", "ellipses, PSF 0.6 px", "brain slices"}
    for row in rows.values():
        assert row["shears"] > row["bilinear"] + 5
    psf, sampled = rows["ellipses, PSF 0.6 px"], rows["ellipses, point-sampled"]
    assert psf["shears_turned"] > sampled["shears_turned"] + 10


def test_learned_graph(tmp_path: Path) -> None:
    """Training-side figures (not in run_all): the quick run measures three of the four
    exports (the optimised TV-step one only in the full run), and the TV step's 20
    unrolled iterations make the graph far larger than the network alone."""
    from bench import learned_graph

    r = learned_graph.main(["--quick", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "learned_graph.json").read_text()) == r
    rows = {(row["tv_step"], row["optimised"]): row for row in r["rows"]}
    assert set(rows) == {(False, True), (False, False), (True, False)}
    assert rows[True, False]["nodes"] > 10 * rows[False, False]["nodes"]
    assert all(row["batch1_ms"] > 0 and row["batch8_ms"] > 0 for row in rows.values())


def test_training_step(tmp_path: Path) -> None:
    """Training-side figures (not in run_all): both precisions and both CT layouts are
    timed, and bfloat16 blocks give nearly the float32 gradient (it is the same network)."""
    import torch

    from bench import training_step
    from models.train.loop import native_bf16

    r = training_step.main(["--quick", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "training_step.json").read_text()) == r
    (row,) = r["steps_rows"]
    assert row["recipe"] == "inpainting-ei" and row["batch"] == 2
    assert row["fp32_s"] > 0 and row["bf16_s"] > 0
    assert row["grad_cosine"] > 0.99 and 0 < row["grad_rel_diff"] < 0.1
    assert all(r["ct_products"][f"{k}_ms"] > 0 for k in ("ell", "csr64", "csr"))
    sweep = {(b["loss"], b["batch"]): b for b in r["batch_rows"]}
    assert set(sweep) == {("rei", 1), ("rei", 2), ("ei", 1), ("ei", 2)}
    # In the precision that models.train would take on this machine.
    assert r["sweep_precision"] == ("bf16" if native_bf16(torch.device("cpu")) else "fp32")
    for b in sweep.values():
        # s_per_step is rounded to the ms and ms_per_image to 0.1 ms, so they agree to
        # half a ms over the batch and 0.05:
        assert b["s_per_step"] > 0
        tolerance = 0.5 / b["batch"] + 0.05
        assert b["ms_per_image"] == pytest.approx(b["s_per_step"] / b["batch"] * 1e3,
                                                  abs=tolerance)


def test_teacher_tv(tmp_path: Path) -> None:
    """Training-side figures (not in run_all): both ways of computing the TV teacher's
    targets are timed for every EI recipe, and they give the same images."""
    from bench import teacher_tv

    r = teacher_tv.main(["--quick", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "teacher_tv.json").read_text()) == r
    assert [row["recipe"] for row in r["rows"]] == ["ct-ei", "mri-ei", "inpainting-ei"]
    for row in r["rows"]:
        assert row["ort_s_per_image"] > 0 and row["torch_s_per_image"] > 0
        assert row["max_rel_diff"] < 1e-3


def test_ct_graph(tmp_path: Path) -> None:
    """Training-side figures (not in run_all): the shipped ct-ei graph's time splits into
    its blocks' convolutions and the sparse product's gathers, and the three formulations
    of A and Aᵀ compute the same product."""
    from bench import ct_graph

    r = ct_graph.main(["--quick", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "ct_graph.json").read_text()) == r
    shares = {row["op"]: row["share"] for row in r["profile"]["ops"]}
    assert {"Conv", "GatherElements"} <= set(shares)
    assert all(v > 0 for v in shares.values()) and sum(shares.values()) <= 1.0 + 1e-3
    assert r["profile"]["batch_ms"] > 0
    rows = r["products"]
    assert [(row["product"], row["formulation"]) for row in rows] == [
        (p, f) for p in ("A", "Aᵀ") for f in ct_graph.FORMULATIONS
    ]
    for row in rows:
        assert row["ms"] > 0 and row["max_diff"] < 1e-5
