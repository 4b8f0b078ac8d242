"""``bench list tasks | encoders | profiles | spaces``: what is registered (never generates data)."""

from __future__ import annotations

import argparse

from bench.commands._args import add_cohort_args, cohort_from, err_console, print_listing
from bench.errors import MribenchError
from bench.profiles import PROFILES


def register(sub) -> None:
    p = sub.add_parser("list", help="list tasks, encoders, profiles or input spaces")
    p.add_argument("what", choices=("tasks", "encoders", "profiles", "spaces"))
    p.add_argument("--json", action="store_true", help="print a JSON list (one object per row)")
    add_cohort_args(p)
    p.set_defaults(func=cmd_list)


# -- bench list --------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    if args.what == "tasks":
        return _list_tasks(args)
    if args.what == "encoders":
        from bench.encoders import get_encoder, list_encoders

        rows = []
        for name in list_encoders():
            try:
                card = get_encoder(name).card
            except MribenchError as e:  # an encoder that needs arguments (features: --features PATH)
                rows.append([name, str(e), None, None, None, None])
                continue
            rows.append([name, card.architecture, card.n_parameters, card.embed_dim, card.input_space, card.ssl_method])
        print_listing(args, "encoders", ["encoder", "architecture", "parameters", "embed dim", "input space",
                                          "SSL method"], rows)
    elif args.what == "profiles":
        print_listing(args, "run profiles",
                       ["profile", "AD subjects", "healthy subjects", "tumour subjects", "resolution (mm)",
                        "what for"],
                       [[p.name, p.synth_ad_subjects, p.synth_healthy_subjects, p.synth_tumour_subjects,
                         p.synth_resolution, p.description]
                        for p in PROFILES.values()])
    else:
        from bench.data.spaces import SPACES

        print_listing(args, "input spaces", ["space", "shape", "spacing (mm)", "description"],
                       [[s.name, "x".join(map(str, s.shape)), s.spacing_mm, s.description] for s in SPACES.values()])
    return 0


def _existing_cohort(args: argparse.Namespace):
    """The cohort named by --cohort, or the profile's synthetic cohort if it is already generated;
    None otherwise. Listing never generates data (the default cohort takes minutes)."""
    from bench.data.sources import synth_dir, synth_name

    if args.cohort and args.cohort != "synth":
        return cohort_from(args)
    folder = synth_dir(args.profile, args.seed)
    if not folder.is_dir():  # not generated: nothing to count, and no need to load the generator
        return None
    from bench.data.bids import read_bids
    from bench.data.synth.generate import SynthConfig, is_complete

    if is_complete(folder, SynthConfig.from_profile(args.profile, seed=args.seed)):
        return read_bids(folder, name=synth_name(args.profile))  # read, never (re)generate
    return None


def _list_tasks(args: argparse.Namespace) -> int:
    from bench.tasks import list_tasks

    cohort = _existing_cohort(args)
    if cohort is not None:
        from bench.runner import prepare_task  # (torch): only to count the subjects of a cohort
    splits = ("train", "val", "test", "external")
    rows = []
    for name, spec in list_tasks().items():
        counts: list = []
        if cohort is not None:
            try:
                examples, _ = prepare_task(spec, cohort)
                n = examples.table.groupby("split")["participant_id"].nunique()
                counts = [int(n.get(s, 0)) for s in splits]
            except MribenchError as e:
                counts = [None] * 4
                err_console.print(f"{name}: {e}", highlight=False, soft_wrap=True)
        arrow = "up" if spec.higher_is_better else "down"
        rows.append([name, spec.version, spec.kind, spec.cohort, *counts, f"{spec.main_score} ({arrow})"])
    columns = ["task", "version", "kind", "cohort", *(splits if cohort is not None else ()), "main score"]
    note = ("(subjects per split)" if cohort is not None else
            f"(subjects per split: give --cohort, or generate the {args.profile} cohort with `bench data synth`)")
    print_listing(args, f"tasks on {cohort.name}" if cohort is not None else "tasks", columns, rows, note)
    return 0
