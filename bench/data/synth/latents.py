"""Subject-level latent variables of the synthetic cohort: who, where, when and how ill.

Everything here is drawn from ``numpy.random.default_rng([seed, stream, subject])`` so one
subject's draws never depend on how many other subjects were generated or in what order.
Nothing here touches voxels; ``render.py`` turns these latents into images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bench.data.synth import effects as fx

#: Random-stream ids, so each kind of draw has its own independent generator.
STREAM_SUBJECT, STREAM_ANATOMY, STREAM_SCAN, STREAM_INDIVIDUAL, STREAM_MEASURE = 0, 1, 2, 3, 4
#: Rescans (a second same-session acquisition, ``rescans.py``) draw only from streams of their own,
#: added after the others, so every scan and table generated before them keeps its bytes.
STREAM_RESCAN, STREAM_RESCAN_MEASURE = 5, 6

@dataclass(frozen=True)
class Site:
    """A scanner: its intensity scale, contrast (gamma), bias field, noise and blur."""

    name: str
    weight: float      # share of subjects scanned here
    scale: float       # global intensity scale (arbitrary scanner units)
    gamma: float       # contrast curve applied to normalised intensity
    bias: float        # amplitude of the smooth multiplicative bias field
    noise: float       # Rician noise sigma relative to mean brain intensity
    blur_mm: float     # Gaussian blur sigma (point-spread function), mm
    held_out: bool = False


SITES: tuple[Site, ...] = (
    Site("S1", 0.32, 1.00, 1.00, 0.10, 0.020, 0.0),
    Site("S2", 0.28, 0.85, 0.92, 0.20, 0.035, 0.7),
    Site("S3", 0.25, 1.15, 1.08, 0.15, 0.025, 0.4),
    Site("S4", 0.15, 1.30, 1.20, 0.30, 0.050, 1.0, held_out=True),
)
EXTERNAL_SITE = next(s.name for s in SITES if s.held_out)
SITE_BY_NAME = {s.name: s for s in SITES}


@dataclass
class Visit:
    session_id: str
    month: float  # exact months from baseline (jittered around the nominal month)


@dataclass
class Subject:
    """Latents of one subject. Times are months from the subject's baseline session."""

    index: int
    participant_id: str
    population: str            # 'ad' (ageing / Alzheimer's), 'healthy' (lifespan) or 'tumour'
    sex: str
    age0: float                # age at baseline, years
    site: str
    head_scale: float
    visits: list[Visit]
    # Alzheimer's model (population 'ad')
    onset_years: float = math.nan   # stage s(t) = sigmoid(rate * (t - onset))
    rate: float = math.nan          # per year
    risk_factor: int = 0
    threshold_mci: float = math.nan
    threshold_ad: float = math.nan
    baseline_dx: str | None = None  # diagnosis group the subject was drawn from
    followup_months: float = math.nan  # last month of clinical follow-up (beyond the last scan)
    # individual anatomy and ageing (every population): see bench.data.synth.effects
    brain_age_gap: float = 0.0      # biological minus chronological age at baseline, years
    ageing_rate: float = 1.0        # biological years per calendar year
    hippocampus_size: float = 0.0   # log-volume deviation of both hippocampi
    hippocampus_asym: float = 0.0   # log-volume deviation, left minus right / 2
    ventricle_size: float = 0.0     # log-volume deviation of the lateral ventricles
    ventricle_asym_mm: float = 0.0  # wall depth, left minus right / 2
    gm_thickness: float = 0.0       # relative cortical thickness deviation
    wm_size: float = 0.0            # relative white-matter deviation
    # tumour model (population 'tumour')
    marker: int = -1
    tumour: dict = field(default_factory=dict)
    survival_true: float = math.nan
    censor_time: float = math.nan

    # -- disease course -------------------------------------------------------------
    def stage(self, month: float) -> float:
        """Latent Alzheimer's stage in [0, 1] at ``month``; 0 for the tumour sub-cohort."""
        if self.population != "ad":
            return 0.0
        t = month / 12.0
        return 1.0 / (1.0 + math.exp(-self.rate * (t - self.onset_years)))

    def diagnosis(self, month: float) -> str | None:
        """CN / MCI / AD from the stage with this subject's (noisy) thresholds; monotone in time.
        The healthy lifespan population is CN; the tumour sub-cohort has no such diagnosis."""
        if self.population == "healthy":
            return "CN"
        if self.population != "ad":
            return None
        s = self.stage(month)
        return "AD" if s >= self.threshold_ad else "MCI" if s >= self.threshold_mci else "CN"

    def stage_burden(self, month: float, power: float, steps: int = 48) -> float:
        """Years-weighted disease burden since baseline: the integral of stage^power over
        [0, month] (trapezoid rule; the stage is smooth), which drives atrophy that keeps going
        after the stage saturates."""
        if self.population != "ad" or month <= 0:
            return 0.0
        t = np.linspace(0.0, month, steps + 1)
        s = 1.0 / (1.0 + np.exp(-self.rate * (t / 12.0 - self.onset_years)))
        return float(np.trapezoid(s ** power, t / 12.0))

    def _crossing_month(self, threshold: float) -> float:
        return 12.0 * (self.onset_years + math.log(threshold / (1 - threshold)) / self.rate)

    @property
    def ad_month_true(self) -> float:
        """Exact month the stage crosses the AD threshold (negative: before baseline)."""
        return self._crossing_month(self.threshold_ad) if self.population == "ad" else math.nan

    @property
    def mci_month_true(self) -> float:
        return self._crossing_month(self.threshold_mci) if self.population == "ad" else math.nan

    @property
    def conversion_month(self) -> float:
        """Observed MCI->AD conversion: the exact month, if it falls inside follow-up, else NaN.

        Subjects already AD at baseline did not convert under observation.
        """
        m = self.ad_month_true
        if self.population != "ad" or m <= 0 or m > self.last_known_month:
            return math.nan
        return m

    @property
    def last_known_month(self) -> float:
        """Last month the diagnosis is known: the last scan or later clinical follow-up."""
        last = self.visits[-1].month
        return last if math.isnan(self.followup_months) else max(last, self.followup_months)

    @property
    def survival_months(self) -> float:
        return min(self.survival_true, self.censor_time)

    @property
    def event(self) -> int:
        return int(self.survival_true <= self.censor_time)

    def age(self, month: float) -> float:
        return self.age0 + month / 12.0

    def biological_age(self, month: float) -> float:
        """The age the brain looks: chronological age at baseline plus the individual gap,
        advancing at the individual ageing rate."""
        return self.age0 + self.brain_age_gap + self.ageing_rate * month / 12.0


def participant_label(index: int) -> str:
    return f"sub-{index + 1:04d}"


def session_label(nominal_month: int) -> str:
    return f"ses-M{nominal_month:02d}"


def stream_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def _site(rng: np.random.Generator) -> str:
    w = np.array([s.weight for s in SITES])
    return SITES[int(rng.choice(len(SITES), p=w / w.sum()))].name


def _visits(rng: np.random.Generator, nominal_months: tuple[int, ...], dropout_month: float) -> list[Visit]:
    """Irregular visits: jitter around nominal months, random misses, none after ``dropout_month``."""
    visits = [Visit(session_label(0), 0.0)]
    for nominal in nominal_months[1:]:
        if nominal > dropout_month:
            break
        if rng.random() < fx.MISSED_VISIT_P:  # missed visit
            continue
        month = float(np.clip(nominal + rng.normal(0, 0.12 * nominal ** 0.5 + 0.4),
                              visits[-1].month + 2.0, None))
        visits.append(Visit(session_label(nominal), round(month, 2)))
    return visits


def _individual(seed: int, index: int) -> dict[str, float]:
    """Individual anatomy and ageing latents (own random stream, every population)."""
    rng = stream_rng(seed, STREAM_INDIVIDUAL, index)
    return {
        "brain_age_gap": float(rng.normal(0, fx.BRAIN_AGE_GAP_SD)),
        "ageing_rate": float(np.exp(rng.normal(0, fx.AGEING_RATE_LOG_SD))),
        "hippocampus_size": float(rng.normal(0, fx.HIPPO_SIZE_LOG_SD)),
        "hippocampus_asym": float(rng.normal(0, fx.HIPPO_ASYMMETRY_LOG_SD)),
        "ventricle_size": float(rng.normal(0, fx.VENT_SIZE_LOG_SD)),
        "ventricle_asym_mm": float(rng.normal(0, fx.VENT_ASYMMETRY_MM)),
        "gm_thickness": float(np.clip(rng.normal(0, fx.GM_THICKNESS_SD), -0.12, 0.12)),
        "wm_size": float(np.clip(rng.normal(0, fx.WM_SIZE_SD), -0.1, 0.1)),
    }


def _head_scale(rng: np.random.Generator, sex: str) -> float:
    """Linear head size: ICV differs about 12 % between the sexes and 7 % within (CV)."""
    return float(np.clip(rng.normal(1.0 + (0.02 if sex == "M" else -0.02), 0.024), 0.92, 1.08))


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _baseline_stage(rng: np.random.Generator, dx: str, th_mci: float, th_ad: float) -> float:
    """A baseline stage inside the diagnosis' band, uniform on the logit scale."""
    lo, hi = {"CN": (0.004, th_mci * 0.95), "MCI": (th_mci, th_ad), "AD": (th_ad, 0.93)}[dx]
    return 1.0 / (1.0 + math.exp(-rng.uniform(_logit(lo), _logit(hi))))


def draw_ad_subject(seed: int, index: int) -> Subject:
    """A subject of the ageing / Alzheimer's sub-cohort (longitudinal, T1w at every MRI visit).

    The baseline diagnosis is drawn with ADNI-1's mix, then a baseline stage inside that
    diagnosis' band and a progression rate; clinical follow-up continues after the last MRI
    (``followup_months``), as ADNI's clinical visits do.
    """
    rng = stream_rng(seed, STREAM_SUBJECT, index)
    groups = list(fx.BASELINE_MIX)
    dx = groups[int(rng.choice(len(groups), p=np.array([fx.BASELINE_MIX[g] for g in groups])))]
    sex = "F" if rng.random() < fx.FEMALE_SHARE[dx] else "M"
    mean, sd, lo, hi = fx.AD_POPULATION_AGE
    age0 = float(np.clip(rng.normal(mean, sd), lo, hi))
    th_mci = float(np.clip(rng.normal(*fx.THRESHOLD_MCI), 0.05, 0.25))
    th_ad = float(np.clip(rng.normal(*fx.THRESHOLD_AD), 0.5, 0.8))
    risk = int(rng.random() < fx.RISK_SHARE[dx])
    rate = float(fx.STAGE_RATE_MEDIAN[dx] * np.exp(rng.normal(0, fx.STAGE_RATE_LOG_SD))
                 * (fx.RISK_RATE_FACTOR if risk else 1.0))
    s0 = _baseline_stage(rng, dx, th_mci, th_ad)
    study_end = float(rng.uniform(*fx.STUDY_END_MONTHS))
    followup = float(min(rng.exponential(fx.DROPOUT_MEAN_MONTHS), study_end))
    site = _site(rng)
    head = _head_scale(rng, sex)
    visits = _visits(rng, fx.MRI_VISIT_MONTHS, dropout_month=followup)
    return Subject(
        index=index, participant_id=participant_label(index), population="ad", sex=sex,
        age0=round(age0, 2), site=site, head_scale=head, visits=visits,
        onset_years=-_logit(s0) / rate, rate=rate, risk_factor=risk,
        threshold_mci=th_mci, threshold_ad=th_ad, baseline_dx=dx,
        followup_months=round(max(followup, visits[-1].month), 2),
        **_individual(seed, index),
    )


def draw_healthy_subject(seed: int, index: int) -> Subject:
    """A cognitively normal adult of the lifespan sub-cohort: one T1w session (brain age)."""
    rng = stream_rng(seed, STREAM_SUBJECT, index)
    sex = "F" if rng.random() < fx.HEALTHY_FEMALE_SHARE else "M"
    age0 = float(rng.uniform(*fx.HEALTHY_AGE_RANGE))
    site = _site(rng)
    return Subject(
        index=index, participant_id=participant_label(index), population="healthy", sex=sex,
        age0=round(age0, 2), site=site, head_scale=_head_scale(rng, sex),
        visits=[Visit(session_label(0), 0.0)], baseline_dx="CN", **_individual(seed, index),
    )


def draw_tumour_subject(seed: int, index: int, candidate_centres: np.ndarray) -> Subject:
    """A glioma-like subject: one pre-operative session with T1w, T2w and FLAIR.

    The marker (IDH-like) changes the lesion's appearance and the hazard; survival is a
    Weibull time whose hazard grows with core volume and age and falls with the marker,
    censored uniformly (loss to follow-up / end of study).
    """
    rng = stream_rng(seed, STREAM_SUBJECT, index)
    marker = int(rng.random() < 0.4)
    age0 = float(rng.uniform(25, 62) if marker else rng.uniform(40, 82))
    sex = "F" if rng.random() < 0.45 else "M"
    core_r = float(rng.uniform(7, 16) if marker else rng.uniform(9, 20))
    tumour = {
        "centre_mm": candidate_centres[int(rng.integers(len(candidate_centres)))].tolist(),
        "core_radius_mm": core_r,
        "oedema_ratio": float(rng.uniform(1.15, 1.4) if marker else rng.uniform(1.5, 2.1)),
        "irregularity": 0.08 if marker else 0.22,
        "shape_dirs": rng.normal(size=(4, 3)).tolist(),
        "shape_coefs": rng.normal(size=4).tolist(),
        "necrosis": bool(marker == 0 and rng.random() < 0.8),
        "mass_effect": float(rng.uniform(0.15, 0.35)),
    }
    core_ml = 4 / 3 * math.pi * core_r ** 3 / 1000
    lp = 0.9 * math.log(core_ml / 8.0) + 0.45 * (age0 - 55) / 10 - 1.1 * marker
    shape_k, scale = 1.3, 20.0
    survival = scale * (-math.log(1 - rng.random()) / math.exp(lp)) ** (1 / shape_k)
    return Subject(
        index=index, participant_id=participant_label(index), population="tumour", sex=sex,
        age0=round(age0, 2), site=_site(rng),
        head_scale=float(np.clip(rng.normal(1.0 + (0.025 if sex == "M" else -0.015), 0.025), 0.93, 1.07)),
        visits=[Visit(session_label(0), 0.0)], marker=marker, tumour=tumour,
        survival_true=round(survival, 2), censor_time=round(float(rng.uniform(6, 72)), 2),
        **_individual(seed, index),
    )
