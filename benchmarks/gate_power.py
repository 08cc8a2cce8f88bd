"""How often ``gate --baseline`` flags a true 10% slowdown, and how often an unchanged model (issue 15).

One FP32 ONNX file of torchvision's resnet18 (random weights) at 112x112, and the same network at
118x118 (11% more pixels: about 10% more work). Each trial measures, on cpu-onnxruntime with the
target's own settings: the baseline file, the same file again, and the slower file, one after another
(as CI would: a baseline run, later another run). Each later measurement is judged against the
baseline with edgekd's rule (ratio of medians above 1 + min_effect, 95% moving-block bootstrap interval
above 1). Prints the detection rate, the false-alarm rate and the ratios seen.

``--repeats N`` makes each "run" N measurements of its file, as ``--repeats`` / ``latency.repeats`` does,
and judges with the rule the gate uses then: the ratio of the repeats' p50s with a Welch t interval on
their logarithms, so that drift between measurements is inside the interval.

``--relative`` judges instead what drift cancels out of: each "run" times the variant interleaved call by
call with a fixed reference file (the teacher, resnet18 at 128x128, which a PR does not change), and the
gate compares that ratio with the baseline run's ratio (flag above 1 + min_effect).

``--rounds R`` judges by the rule the gate uses when the teacher file is the same bytes in both runs
(issue 26): each "run" times the teacher (resnet18 at 128x128) and the variant one after the other in R
rounds; the change between this run's per-round variant/teacher ratios and the baseline run's is
the gate's ``rounds_shift_interval`` (Hodges-Lehmann with its rank interval from 4 rounds a side; flag
above 1 + min_effect with the interval above 1). Each trial is judged three times from the same measurements, by each round's p50, mean (the
gate's statistic) and mean of its fastest 10% of calls, so the three are compared side by side.
``--load N`` keeps N CPU-bound processes spinning beside the whole benchmark (a busy runner).

    python benchmarks/gate_power.py --trials 20
    python benchmarks/gate_power.py --trials 20 --rounds 8 --seconds 0.3 --load 1 --slowdown 0.10
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch


def export(size: int, path: Path) -> Path:
    import torchvision

    from edgekd.stages.exporting import export_fp32

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_fp32(model, torch.rand(1, 3, size, size), path, 17)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--min-effect", type=float, default=0.05)
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per measurement")
    parser.add_argument("--repeats", type=int, default=1, help="measurements per run (>= 3: the repeats rule)")
    parser.add_argument("--relative", action="store_true", help="judge ratios to a reference timed interleaved")
    parser.add_argument("--pairs", type=int, default=300, help="--relative: interleaved call pairs per run")
    parser.add_argument("--rounds", type=int, default=0, help="judge by per-round ratios to the unchanged teacher")
    parser.add_argument("--load", type=int, default=0, help="CPU-bound processes spinning beside the benchmark")
    parser.add_argument("--slowdown", type=float, default=None, help="size the slow file so that it measures "
                        "this much slower than the base file (alone, before the co-tenants start): 0.10")
    run_trials(parser.parse_args())


def spin() -> None:
    while True:
        pass


def co_tenants(n: int) -> list:
    """``n`` processes that keep a CPU busy each, as another job on a shared runner would."""
    import multiprocessing

    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(n)]
    for spinner in spinners:
        spinner.start()
    return spinners


def run_trials(args: argparse.Namespace) -> None:
    """The files made (and the slow one calibrated) on a quiet machine, then the co-tenants started and
    the trials judged."""
    from edgekd.measure.measurement import BackendPool, bench_targets

    tmp = Path(tempfile.mkdtemp(prefix="gate-power-"))
    (target,) = bench_targets(["cpu-onnxruntime"], min_seconds=args.seconds, batch=1)
    pool = BackendPool()
    base_file = export(112, tmp / "base.onnx")
    slow_file = (calibrated(base_file, args.slowdown, tmp, target, pool) if args.slowdown is not None
                 else export(118, tmp / "slow.onnx"))
    spinners = co_tenants(args.load)
    try:
        judge(args, base_file, slow_file, tmp, target, pool)
    finally:
        for spinner in spinners:
            spinner.terminate()


def calibrated(base_file: Path, slowdown: float, tmp: Path, target, pool) -> Path:
    """The first size (from 114 px up) whose file measures at least ``1 + slowdown`` times the base file's
    p50 (medians of 3 alternating measurements each, alone): "10% slower" as measured, not as counted in
    pixels (118 px read ~6% slower relative to a teacher)."""
    from edgekd.measure.measurement import measure

    for size in range(114, 200, 2):
        candidate = export(size, tmp / f"slow{size}.onnx")
        base, slow = [], []
        for _ in range(3):
            base.append(measure(base_file, "base", "fp32", target, pool)["latency_ms"]["p50"])
            slow.append(measure(candidate, "slow", "fp32", target, pool)["latency_ms"]["p50"])
        ratio = float(np.median(slow) / np.median(base))
        print(f"calibration: {size}x{size} reads {ratio:.3f}x the 112x112 file", flush=True)
        if ratio >= 1 + slowdown:
            return candidate
    raise SystemExit("no size up to 198 px measured slow enough")


def judge(args: argparse.Namespace, base_file: Path, slow_file: Path, tmp: Path, target, pool) -> None:
    from edgekd.report.baseline import median_ratio_interval, repeats_ratio_interval
    from edgekd.measure.fingerprint import machine
    from edgekd.measure.measurement import measure

    if args.relative:
        relative(args, base_file, slow_file, export(128, tmp / "teacher.onnx"), target, pool)
        return
    if args.rounds:
        teacher_rounds(args, base_file, slow_file, export(128, tmp / "teacher.onnx"), target, pool)
        return

    def samples(path: Path):  # one run: its calls (one measurement) or its repeats' p50s
        rows = [measure(path, path.stem, "fp32", target, pool) for _ in range(args.repeats)]
        if args.repeats >= 3:
            return [row["latency_ms"]["p50"] for row in rows]
        return np.asarray(rows[0]["latency_samples_ms"])

    def flagged(new, old) -> tuple[bool, float, float, float]:
        rule = repeats_ratio_interval if args.repeats >= 3 else median_ratio_interval
        ratio, lo, hi = rule(new, old)
        return ratio > 1 + args.min_effect and lo > 1.0, ratio, lo, hi

    caught, alarms, rows = 0, 0, []
    for trial in range(args.trials):
        old, same, slow = samples(base_file), samples(base_file), samples(slow_file)
        a = flagged(same, old)
        c = flagged(slow, old)
        alarms += a[0]
        caught += c[0]
        rows.append((trial, a, c))
        print(f"trial {trial + 1}: unchanged ratio {a[1]:.3f} [{a[2]:.3f}, {a[3]:.3f}] {'FLAGGED' if a[0] else 'ok'}; "
              f"10% slower ratio {c[1]:.3f} [{c[2]:.3f}, {c[3]:.3f}] {'caught' if c[0] else 'MISSED'}", flush=True)
    m = machine()
    isa = ", ".join(k for k, on in m["cpu"]["isa"].items() if on)
    print(f"\nmachine: {m['cpu']['model']} ({m['cpu']['usable_cpus']} usable CPUs), ISA: {isa}")
    rule = f"{args.repeats} repeats per run, Welch t on log p50s" if args.repeats >= 3 else "one measurement per run"
    print(f"min_effect {args.min_effect:.0%}, {args.seconds:.1f} s per measurement, {rule}, {args.trials} trials")
    print(f"true 10% slowdowns caught: {caught}/{args.trials} ({caught / args.trials:.0%}; goal >= 95%)")
    print(f"false alarms on the unchanged file: {alarms}/{args.trials} ({alarms / args.trials:.0%}; goal <= 5%)")
    slow_ratios = [c[1] for _, _, c in rows]
    same_ratios = [a[1] for _, a, _ in rows]
    print(f"ratios, unchanged: {min(same_ratios):.3f}-{max(same_ratios):.3f}; slower: "
          f"{min(slow_ratios):.3f}-{max(slow_ratios):.3f}")


STATISTICS = ("p50", "mean", "fastest_tenth_mean")  # of each round's calls; the gate reads the mean


def teacher_rounds(args: argparse.Namespace, base_file: Path, slow_file: Path, teacher_file: Path, target,
                   pool) -> None:
    """The gate's rule for an unchanged teacher: per-round variant/teacher ratios, run against run, judged
    from the same measurements by each round's p50, mean (the gate's statistic) and mean of its fastest
    10% of calls, side by side."""
    from edgekd.measure.fingerprint import machine
    from edgekd.measure.measurement import measure
    from edgekd.report.baseline import rounds_shift_interval

    def run(path: Path) -> dict[str, list[float]]:  # one CI run: R rounds of (teacher, variant)
        ratios: dict[str, list[float]] = {stat: [] for stat in STATISTICS}
        for _ in range(args.rounds):
            teacher = measure(teacher_file, "teacher", "fp32", target, pool)["latency_ms"]
            variant = measure(path, path.stem, "fp32", target, pool)["latency_ms"]
            for stat in ratios:
                ratios[stat].append(variant[stat] / teacher[stat])
        return ratios

    tally = {stat: {"caught": 0, "alarms": 0, "same": [], "slow": []} for stat in STATISTICS}
    for trial in range(args.trials):
        then, same, slower = run(base_file), run(base_file), run(slow_file)
        line = []
        for stat, t in tally.items():
            a, c = rounds_shift_interval(same[stat], then[stat]), rounds_shift_interval(slower[stat], then[stat])
            flag_a = a[0] > 1 + args.min_effect and a[1] > 1.0
            flag_c = c[0] > 1 + args.min_effect and c[1] > 1.0
            t["alarms"] += flag_a
            t["caught"] += flag_c
            t["same"].append(a[0])
            t["slow"].append(c[0])
            line.append(f"{stat}: unchanged {a[0]:.3f} [{a[1]:.3f}, {a[2]:.3f}] {'FLAGGED' if flag_a else 'ok'}, "
                        f"slower {c[0]:.3f} [{c[1]:.3f}, {c[2]:.3f}] {'caught' if flag_c else 'MISSED'}")
        print(f"trial {trial + 1}: " + "; ".join(line), flush=True)
    m = machine()
    isa = ", ".join(k for k, on in m["cpu"]["isa"].items() if on)
    print(f"\nmachine: {m['cpu']['model']} ({m['cpu']['usable_cpus']} usable CPUs), ISA: {isa}; "
          f"{args.load} CPU-bound co-tenant process(es)")
    print(f"per-round ratios to an unchanged teacher, {args.rounds} rounds of {args.seconds:.1f} s, min_effect "
          f"{args.min_effect:.0%}, {args.trials} trials")
    for stat, t in tally.items():
        print(f"each round's {stat}: slowdowns caught {t['caught']}/{args.trials} ({t['caught'] / args.trials:.0%}; "
              f"goal >= 95%), false alarms {t['alarms']}/{args.trials} ({t['alarms'] / args.trials:.0%}; goal <= 5%); "
              f"change, unchanged {min(t['same']):.3f}-{max(t['same']):.3f}, slower "
              f"{min(t['slow']):.3f}-{max(t['slow']):.3f}")


def relative(args: argparse.Namespace, base_file: Path, slow_file: Path, teacher_file: Path, target, pool) -> None:
    from edgekd.measure.latency import seeded_input
    from edgekd.measure.fingerprint import machine
    from edgekd.measure.int8_verdict import interleaved_ratio

    backend = pool.get(target.backend)
    teacher, base, slow = (backend.compile(p, target) for p in (teacher_file, base_file, slow_file))
    xs = {id(m): seeded_input(m.input_shape) for m in (teacher, base, slow)}

    def run(model) -> float:  # one CI run: the variant against the unchanged teacher, interleaved
        return interleaved_ratio(lambda: model(xs[id(model)]), lambda: teacher(xs[id(teacher)]), args.pairs)["ratio"]

    caught = alarms = 0
    changes_same, changes_slow = [], []
    for trial in range(args.trials):
        then, same, slower = run(base), run(base), run(slow)
        a, c = same / then, slower / then
        alarms += a > 1 + args.min_effect
        caught += c > 1 + args.min_effect
        changes_same.append(a)
        changes_slow.append(c)
        print(f"trial {trial + 1}: unchanged {a:.3f} {'FLAGGED' if a > 1 + args.min_effect else 'ok'}; "
              f"10% slower {c:.3f} {'caught' if c > 1 + args.min_effect else 'MISSED'}", flush=True)
    m = machine()
    isa = ", ".join(k for k, on in m["cpu"]["isa"].items() if on)
    print(f"\nmachine: {m['cpu']['model']} ({m['cpu']['usable_cpus']} usable CPUs), ISA: {isa}")
    print(f"relative to a reference timed interleaved, {args.pairs} pairs per run, min_effect {args.min_effect:.0%}, "
          f"{args.trials} trials")
    print(f"true 10% slowdowns caught: {caught}/{args.trials} ({caught / args.trials:.0%}; goal >= 95%)")
    print(f"false alarms on the unchanged file: {alarms}/{args.trials} ({alarms / args.trials:.0%}; goal <= 5%)")
    print(f"change, unchanged: {min(changes_same):.3f}-{max(changes_same):.3f}; slower: "
          f"{min(changes_slow):.3f}-{max(changes_slow):.3f}")


if __name__ == "__main__":
    main()
