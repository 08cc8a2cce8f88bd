"""``edgekd compress``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .app import app, err, handle_errors, out


def parse_arch_args(items: list[str]) -> dict[str, Any]:
    """``--arch-arg input_size=28`` -> ``{"input_size": 28}`` (values read as YAML scalars or lists)."""
    import yaml

    from ..errors import InputError

    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise InputError(f"--arch-arg {item!r}: expected KEY=VALUE with KEY a Python identifier")
        try:
            parsed[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise InputError(f"--arch-arg {item!r}: VALUE is not a YAML scalar or list") from None
    return parsed


@app.command()
def compress(
    checkpoint: Annotated[Optional[Path], typer.Argument(
        metavar="CHECKPOINT", help="Teacher weights: .safetensors or a state-dict "
                          ".pt/.pth (with --arch). Omit to run the embedded default (bundled digits teacher).")] = None,
    arch: Annotated[Optional[str], typer.Option(
        "--arch", "-a", metavar="SPEC", help="Architecture of CHECKPOINT: edgekd:NAME, torchvision:NAME, "
                    "timm:NAME or package.module:factory.")] = None,
    recipe: Annotated[str, typer.Option(
        "--recipe", "-r", metavar="NAME|FILE",
        help="Recipe name (built-in, see 'edgekd list recipes') or YAML path.")] = "default",
    target: Annotated[Optional[list[str]], typer.Option(
        "--target", "-t", metavar="NAME|FILE", help="Target name or YAML path; repeat for several. "
                      "Default: the recipe's targets.")] = None,
    arch_arg: Annotated[Optional[list[str]], typer.Option(
        "--arch-arg", metavar="KEY=VALUE", help="KEY=VALUE passed to the arch's "
                        "constructor or factory (VALUE read as YAML: 28, true, [1, 2]); repeat for several.")] = None,
    data: Annotated[Optional[str], typer.Option(
        "--data", "-d", metavar="SPEC", help="Data: digits, synthetic, npz:PATH, imagefolder:DIR, "
                    "hf:PATH|NAME, text:FILE or package.module:factory (see 'edgekd list sources'). "
                    "Default: the recipe's data block.")] = None,
    device: Annotated[Optional[str], typer.Option(
        "--device", metavar="DEVICE", help="Training device: auto, cpu, cuda or cuda:N "
                      "(default: the recipe's, auto).")] = None,
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out", "-o", metavar="DIR", help="Run directory. Default: runs/<recipe>[N].")] = None,
    budget: Annotated[Optional[Path], typer.Option(
        "--budget", "-b", metavar="FILE", help="Budget YAML; after the run, exit 1 if it is violated.")] = None,
    trust_checkpoint: Annotated[bool, typer.Option(
        "--trust-checkpoint", metavar="", help="Allow a pickled module or TorchScript checkpoint, which runs code "
                                               "when loaded. Recorded in the manifest.")] = False,
    allow_global: Annotated[Optional[list[str]], typer.Option(
        "--allow-global", metavar="MODULE.NAME", help="module.Name a pickled "
                            "state dict may reference beyond torch's safe list (narrower than --trust-checkpoint); "
                            "repeat.")] = None,
    expect_sha256: Annotated[Optional[str], typer.Option(
        "--expect-sha256", metavar="HEX", help="Refuse CHECKPOINT unless its "
                             "bytes have this SHA-256 (checked before it is opened).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", metavar="", help="Open and check every input (checkpoint, teachers, data, "
                       "targets) and preflight the stages; write recipe.resolved.yaml; train nothing.")] = False,
    resume: Annotated[bool, typer.Option(
        "--resume", metavar="", help="Continue the run in --out from its last finished stage.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", "-f", metavar="", help="Replace an existing run directory at --out.")] = False,
    keep_all: Annotated[bool, typer.Option("--keep-all", metavar="", help="Keep each finished stage's training "
                        "state (by default only an unfinished stage's is kept: what --resume needs).")] = False,
    runs: Annotated[Optional[int], typer.Option("--runs", min=1, metavar="N", help="Timed runs per measurement at "
                    "least, on every target (overrides the targets' latency.runs).")] = None,
    seconds: Annotated[Optional[float], typer.Option("--seconds", min=0.0, metavar="S", help="Timed seconds per "
                       "measurement at least, on every target (overrides latency.min_seconds).")] = None,
) -> None:
    """Compress a checkpoint through a recipe's stages, measure every variant on every target, report."""
    from ..report.gate import ci_annotations, exit_code
    from .precheck import check_compress_inputs
    from .render import print_report_tables

    with handle_errors():
        check_compress_inputs(checkpoint, arch, recipe, budget, target)  # a typo answered before torch loads
        from ..run.pipeline import compress as run_compress

        result = run_compress(checkpoint, arch=arch, arch_args=parse_arch_args(arch_arg or []), recipe=recipe,
                              targets=target, data=data, out=out_dir, budget=budget, trust_checkpoint=trust_checkpoint,
                              allow_globals=tuple(allow_global or ()), expect_sha256=expect_sha256,
                              dry_run=dry_run, resume=resume, force=force, device=device,
                              keep_all=keep_all, timing={"runs": runs, "min_seconds": seconds})
    if result.report is None:
        out.print(f"dry run: wrote {result.run_dir / 'recipe.resolved.yaml'}" if result.wrote_recipe
                  else f"dry run: nothing written ({result.run_dir} holds a run)")
        return
    print_report_tables(result.report)
    out.print(f"run directory: {result.run_dir}  (report.md, report.json, report.html, tradeoff.png)")
    if result.verdicts is not None:
        for v in result.verdicts:
            (out if v.passed else err).print(f"{'PASS' if v.passed else 'FAIL'} {v.name}: {v.message}")
        for line in ci_annotations(result.verdicts):
            print(line)
        raise typer.Exit(exit_code(result.verdicts))
