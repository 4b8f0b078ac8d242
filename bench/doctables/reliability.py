"""The reliability table of the reference encoders, from the committed ``reliability`` records.

``bench docs --write`` renders it into docs/reliability.md: the same cells as the board's
reliability table (:func:`bench.leaderboard.reliability_rows.cells`), with the published test-retest
figures of a volumetric pipeline beside it, so a reader sees whether ``volumes`` sits where a
segmentation tool does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.doctables.sources import Sources

#: The encoders whose reliability records the docs show, in this order when present.
ENCODERS = ("oracle", "volumes", "intensity", "random", "simclr3d@init", "simclr3d", "mae3d", "dino2d")
#: The tasks shown, in this order.
TASKS = ("brain_age", "ad_diagnosis")
#: Published test-retest ICC of brain-predicted age (Cole et al. 2017, NeuroImage 163:115-124:
#: within-scanner test-retest, n = 20, GM maps and raw T1w, CNN and Gaussian-process models).
PUBLISHED_BRAIN_AGE_ICC = (0.90, 0.99)
#: brainageR, pyment and mccqrnn, the most reliable of six public brain-age packages (Dörfel et al. 2023,
#: Hum Brain Mapp 44:6139-6148: 372 healthy adults, 18-86 y).
PUBLISHED_PACKAGES_ICC = (0.94, 0.98)
COMMAND = ("bench run --encoder oracle --encoder volumes --encoder random --task brain_age --task ad_diagnosis "
           "--protocol reliability")


def task_table(src: Sources, task: str) -> list[str]:
    """Markdown lines of the committed reliability records of ``task``, best ICC first."""
    from bench.leaderboard.reliability_rows import cells, reliability_rows

    entries = [e for name in ENCODERS if (e := src.entry(name, task, "reliability")) is not None]
    if not entries:
        return [f"No reliability record of {task} is committed yet; run `{COMMAND}`."]
    header, body = cells(reliability_rows(entries))
    return ([f"**{task}** (test split of the default cohort)", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)] + ["| " + " | ".join(row) + " |" for row in body])


def reliability_table(src: Sources) -> str:
    """The reliability tables of :data:`TASKS`, with the published volumetric reference beside them."""
    lines = []
    for task in TASKS:
        lines += task_table(src, task) + [""]
    low, high = PUBLISHED_BRAIN_AGE_ICC
    best_low, best_high = PUBLISHED_PACKAGES_ICC
    lines += [f"From `{COMMAND}` (and the same for the other encoders). Published test-retest ICCs of predicted "
              f"brain age: {low:.2f}-{high:.2f} (Cole et al. 2017, NeuroImage 163:115-124, within-scanner rescans of "
              f"20 adults) and {best_low:.2f}-{best_high:.2f} for the three most reliable of six public packages "
              "(Dörfel et al. 2023, Hum Brain Mapp 44:6139-6148, 372 healthy adults aged 18-86)."]
    return "\n".join(lines)
