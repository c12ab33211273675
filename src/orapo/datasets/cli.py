"""`orapo data prepare` and `orapo data subset`."""

from __future__ import annotations

from pathlib import Path

import typer

from orapo.errors import fail as _fail


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values or []:
        key, sep, rest = value.partition("=")
        if not sep or not key.strip() or not rest.strip():
            raise typer.BadParameter(f"{flag} expects KEY=VALUE, got {value!r}")
        out[key.strip()] = rest.strip()
    return out


def _fractions(value: str | None) -> tuple[float, float, float] | None:
    if value is None:
        return None
    try:
        parts = tuple(float(x) for x in value.split(","))
    except ValueError:
        raise typer.BadParameter(
            f"--split-fractions expects TRAIN,VAL,TEST, got {value!r}"
        ) from None
    if len(parts) != 3:
        raise typer.BadParameter(f"--split-fractions expects three numbers, got {value!r}")
    return parts  # type: ignore[return-value]


def register(app: typer.Typer) -> None:
    """Add `prepare` and `subset` to ``app`` (the `orapo data` sub-app)."""
    from orapo.datasets.spec import DATASETS

    names = ", ".join(DATASETS.names())
    layouts = "; ".join(
        f"{name}: {' or '.join(DATASETS.get(name).formats)}" for name in DATASETS.names()
    )

    @app.command("prepare")
    def prepare_cmd(
        dataset: str = typer.Argument(..., help=f"Dataset to convert: {names}."),
        root: Path = typer.Option(..., "--root", help="Folder of the dataset as distributed."),
        out: Path = typer.Option(..., "--out", help="Folder to write the manifest into."),
        format: str | None = typer.Option(
            None,
            "--format",
            help=f"Input layout ({layouts}). Default: the one whose files are under --root, "
            "else the first.",
        ),
        reports_root: Path | None = typer.Option(
            None,
            "--reports-root",
            help="mimic-cxr: folder holding files/pXX/pXXXXXXXX/sXXXXXXXX.txt (default: --root).",
        ),
        images_dir: Path | None = typer.Option(
            None,
            "--images-dir",
            help="Image folder (default: mimic-cxr ROOT, iu-xray ROOT/NLMCXR_png, chexpert-plus "
            "ROOT/PNG if present, r2gen ROOT/images).",
        ),
        labels: str = typer.Option(
            "auto",
            "--labels",
            help="Label source: auto (the dataset's own labels when present, else the labeler), "
            "chexpert / negbio (mimic-cxr), chexbert (chexpert-plus), labeler, or none.",
        ),
        labeler: str = typer.Option(
            "rule", "--labeler", help="orapo labeler for studies without dataset labels."
        ),
        sections: str | None = typer.Option(
            None,
            "--sections",
            help="Sections to keep: both, findings or impression (default: findings for "
            "chexpert-plus, both otherwise).",
        ),
        require: str | None = typer.Option(
            None,
            "--require",
            help="Skip studies without: any (some text), findings, impression or both "
            "(default: findings for chexpert-plus, any otherwise).",
        ),
        views: str | None = typer.Option(
            None,
            "--views",
            help="Accepted views in order of preference, comma-separated, or 'any' "
            "(default: PA,AP for mimic-cxr; PA,AP,FRONTAL for chexpert-plus).",
        ),
        max_images: int | None = typer.Option(
            None,
            "--max-images",
            help="Images kept per study, 0 = all selected (default: 1; iu-xray: 0).",
        ),
        file: list[str] | None = typer.Option(
            None,
            "--file",
            help="Override a dataset file, KEY=PATH (relative to --root), e.g. "
            "split=..., metadata=..., chexpert=..., csv=..., labels=..., annotation=..., "
            "reports=...",
        ),
        column: list[str] | None = typer.Option(
            None,
            "--column",
            help="Override a column name, KEY=NAME, e.g. path=path_to_image, "
            "findings=section_findings, labels_key=path_to_image, view=ViewPosition.",
        ),
        split_map: list[str] | None = typer.Option(
            None,
            "--split-map",
            help="Map a dataset split name to train/val/test, FROM=TO (e.g. valid=test).",
        ),
        split_fractions: str | None = typer.Option(
            None,
            "--split-fractions",
            help="iu-xray openi-xml: TRAIN,VAL,TEST fractions of the seeded split "
            "(default 0.7,0.1,0.2).",
        ),
        seed: int | None = typer.Option(
            None, "--seed", help="iu-xray openi-xml: seed of the split (default 0)."
        ),
        r2gen_field: str | None = typer.Option(
            None,
            "--r2gen-field",
            help="r2gen format: manifest section the report goes to, findings (default) or "
            "impression.",
        ),
        copy_images: bool = typer.Option(
            False, "--copy-images", help="Copy images into OUT/images instead of referencing."
        ),
        absolute_paths: bool = typer.Option(
            False, "--absolute-paths", help="Write absolute image paths instead of relative."
        ),
        verify_images: bool = typer.Option(
            False, "--verify-images", help="Open every image with Pillow; skip unreadable ones."
        ),
        strict: bool = typer.Option(
            False, "--strict", help="Make any skipped row or study an error (file and line)."
        ),
        manifest_name: str = typer.Option(
            "manifest.jsonl", "--manifest-name", help="File name of the manifest inside OUT."
        ),
    ) -> None:
        """Convert a dataset as distributed into an orapo manifest (+ prepare_summary.json)."""
        from rich.console import Console

        from orapo.datasets.prepare import prepare
        from orapo.datasets.spec import PrepareError, PrepareOptions
        from orapo.datasets.summary import render_summary

        options = PrepareOptions(
            root=root,
            out=out,
            format=format,
            labels=labels,
            labeler=labeler,
            sections=sections,
            require=require,
            views=tuple(v.strip() for v in views.split(",") if v.strip()) if views else None,
            max_images=max_images,
            reports_root=reports_root,
            images_dir=images_dir,
            files=_pairs(file, "--file"),
            columns=_pairs(column, "--column"),
            split_map=_pairs(split_map, "--split-map"),
            split_fractions=_fractions(split_fractions),
            seed=seed,
            r2gen_field=r2gen_field,
            copy_images=copy_images,
            absolute_paths=absolute_paths,
            verify_images=verify_images,
            strict=strict,
            manifest_name=manifest_name,
        )
        try:
            result = prepare(dataset, options, console=Console(stderr=True))
        except (PrepareError, KeyError) as err:
            _fail(err.args[0] if err.args else str(err))
            return
        console = Console()
        render_summary(result.summary, console)
        console.print(f"wrote {result.manifest} and {result.summary_path}", highlight=False)
        if not result.studies:
            console.print(
                "[bold yellow]warning:[/] no study was kept; the table above says why",
                highlight=False,
            )

    @app.command("subset")
    def subset_cmd(
        manifest: Path = typer.Argument(..., help="Manifest to draw from."),
        n: int = typer.Option(..., "--n", help="Number of studies in the subset."),
        out: Path = typer.Option(..., "-o", "--out", help="Manifest file to write."),
        strategy: str = typer.Option(
            "stratified", "--strategy", help="stratified (covers every observation) or random."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed; the same seed gives the same ids."),
        split: str = typer.Option(
            "train", "--split", help="Split to subsample; the other splits are kept whole."
        ),
        min_per_observation: int | None = typer.Option(
            None,
            "--min-per-observation",
            help="stratified: positives guaranteed per observation (default ceil(n/100)).",
        ),
        uncertain_positive: bool = typer.Option(
            False, "--uncertain-positive", help="Count uncertain (-1) labels as positive."
        ),
    ) -> None:
        """Replace one split of a manifest by a deterministic n-study subset."""
        from rich.console import Console

        from orapo.datasets.subset import SubsetError, make_subset, render_subset_summary
        from orapo.manifest import ManifestError

        try:
            result = make_subset(
                manifest,
                out,
                n,
                strategy=strategy,
                seed=seed,
                split=split,
                min_per_observation=min_per_observation,
                uncertain_positive=uncertain_positive,
            )
        except (SubsetError, ManifestError, FileNotFoundError, KeyError, ValueError) as err:
            _fail(err.args[0] if err.args else str(err))
            return
        console = Console()
        render_subset_summary(result.summary, console)
        console.print(f"wrote {result.manifest} and {result.summary_path}", highlight=False)
