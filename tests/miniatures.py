"""Fabricated miniature releases of ADNI, OASIS-3, IXI, BraTS and UCSF-PDGM, built at test time.

Real data cannot be downloaded here, so each builder writes a handful of subjects in the
release's published layout with its published column names (sources in each docstring), tiny
20^3 volumes sampled from the MNI152 template that nilearn ships, and the messy parts real
releases have: duplicate visits, missing diagnoses, visits without scans, scans without visits,
repeat scans, series that are not used. Every builder is deterministic (fixed seeds, gzip
without timestamps), so the same miniature has the same bytes and shares embedding caches.

The counts the tests assert are worked out by hand in each builder's docstring.
"""

from __future__ import annotations

import gzip
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

SHAPE = (20, 20, 20)
SPACING = 10.0                      # mm: 20 voxels cover the brain's bounding box (the sanity gate's largest voxel)
CENTER = np.array([0.0, -17.0, 5.0])  # MNI brain centre shared with bench.data.spaces


def affine() -> np.ndarray:
    a = np.diag([SPACING] * 3 + [1.0])
    a[:3, 3] = CENTER - SPACING * (np.array(SHAPE) - 1) / 2
    return a


@lru_cache(maxsize=1)
def _template() -> np.ndarray:
    """The MNI152 T1 (nilearn, 2 mm) sampled onto the miniature grid, scaled to 0..1."""
    from nilearn.datasets import load_mni152_template
    from scipy.ndimage import map_coordinates

    img = load_mni152_template(resolution=2)
    data = np.asarray(img.get_fdata(), np.float32)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), -1).reshape(-1, 3)
    world = np.c_[ijk, np.ones(len(ijk))] @ affine().T
    src = world @ np.linalg.inv(img.affine).T
    out = map_coordinates(data, src[:, :3].T, order=1, mode="constant").reshape(SHAPE)
    return out / out.max()


def write_nifti(path: Path, seed: int, *, gz: bool = True, atrophy: float = 0.0) -> Path:
    """A template-like 20^3 scan: subject scale, noise, optional global darkening (``atrophy``)."""
    rng = np.random.default_rng(seed)
    vol = _template() * (1.0 + 0.1 * rng.standard_normal()) * (1.0 - atrophy)
    vol = (vol + 0.02 * rng.standard_normal(SHAPE)).astype(np.float32)
    return _save(path, nib.Nifti1Image(vol, affine()), gz)


def write_tumour_labels(path: Path, seed: int, values=(1, 2, 4)) -> Path:
    """A BraTS-convention label map: oedema (2) around a core (1 necrotic, 4 enhancing)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(SHAPE, np.uint8)
    c = rng.integers(6, 10, size=3)
    lab[c[0] - 3:c[0] + 3, c[1] - 3:c[1] + 3, c[2] - 3:c[2] + 3] = values[1]
    lab[c[0] - 1:c[0] + 2, c[1] - 1:c[1] + 2, c[2] - 1:c[2] + 2] = values[2]
    lab[c[0], c[1], c[2]] = values[0]
    img = nib.Nifti1Image(lab, affine())
    img.set_data_dtype(np.uint8)
    return _save(path, img, True)


def _save(path: Path, img, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = img.to_bytes()
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


# -- ADNI ------------------------------------------------------------------------------------------
ADNI_SITES = ("002", "011", "023")
#: roles of the 24 ADNI subjects, in order (see build_adni)
ADNI_ROLES = ["CN"] * 6 + ["sMCI"] * 8 + ["pMCI"] * 7 + ["AD"] * 2 + ["shortMCI"]
ADNI_CONVERSION = {14: 12, 15: 24, 16: 36, 17: 12, 18: 24, 19: 36, 20: 24}  # subject index -> month


def adni_ptid(i: int) -> str:
    return f"{ADNI_SITES[i % 3]}_S_{4000 + i:04d}"


def build_adni(root: Path) -> Path:
    """ADNI: ``ROOT/ADNI/<PTID>/<description>/<date>_hh_mm_ss.s/I<id>/ADNI_..._I<id>.nii`` and
    ``ROOT/ADNIMERGE.csv`` (LONI IDA NIfTI download layout; ADNIMERGE column names).

    24 subjects at sites 002/011/023: 6 CN (visits bl, m12, m24, m36), 8 sMCI (bl, m06, m12, m24,
    m36 scanned + m48 clinical only), 7 pMCI (bl..m36, AD from month 12 / 24 / 36), 2 AD (bl..m24),
    1 MCI with follow-up to m12 only. T1w scans kept: 24 + 40 + 35 + 8 + 3 = 110, plus 1 FLAIR.

    Messy parts, by subject index: 0 has its m12 row twice in ADNIMERGE (1 visit dropped);
    6 has no DX at m06 (diagnosis left empty); 1 has an extra MPRAGE 400+ days from any visit
    (1 scan dropped); 2's baseline scan is dated 120 days after its exam but ADNIMERGE's IMAGEUID
    names it (kept); 7 has an MPRAGE_Repeat at baseline (kept as run 02, a repeat); 8 has a localizer
    (1 scan dropped); 9 has an Axial_T2_FLAIR at baseline (kept as FLAIR); 14 uses the old
    spellings (NL / 'MCI to Dementia'); 21 has no PTGENDER (sex left empty); 099_S_9999 has a
    scan but no ADNIMERGE row (1 scan dropped). ADNIMERGE visits without a scan: the 8 m48 visits.
    Volumes (ADNIMERGE's FreeSurfer columns, mm^3) shrink with ``_atrophy``; 6's m06 visit has no
    Hippocampus (1 scanned visit with an empty volume; the visit has no DX either).
    """
    rows, image = [], [10000]
    for i, role in enumerate(ADNI_ROLES):
        ptid = adni_ptid(i)
        months = {"CN": [0, 12, 24, 36], "sMCI": [0, 6, 12, 24, 36, 48], "pMCI": [0, 6, 12, 24, 36],
                  "AD": [0, 6, 12, 24], "shortMCI": [0, 6, 12]}[role]
        bl = date(2010, 1, 4) + timedelta(days=17 * i)
        age = 65.0 + (i * 7) % 20 + 0.5
        for m in months:
            if role == "CN":
                dx = "CN"
            elif role in ("sMCI", "shortMCI"):
                dx = "MCI"
            elif role == "AD":
                dx = "Dementia"
            else:
                dx = "Dementia" if m >= ADNI_CONVERSION[i] else "MCI"
            if i == 14:  # ADNIMERGE before 2016 spelled transitions out
                dx = {0: "MCI", 6: "MCI", 12: "MCI to Dementia"}.get(m, "Dementia")
            if i == 6 and m == 6:
                dx = ""
            exam = bl + timedelta(days=round(m * 30.44) + (i % 5) - 2) if m else bl
            row = {"RID": 4000 + i, "COLPROT": "ADNI2", "ORIGPROT": "ADNI2", "PTID": ptid,
                   "SITE": int(ADNI_SITES[i % 3]), "VISCODE": "bl" if m == 0 else f"m{m:02d}",
                   "EXAMDATE": exam.isoformat(), "DX_bl": {"CN": "CN", "AD": "AD"}.get(role, "LMCI"),
                   "AGE": age, "PTGENDER": "" if i == 21 else ("Male" if i % 2 else "Female"), "PTEDUCAT": 16,
                   "APOE4": i % 3 % 2, "DX": dx, "IMAGEUID": "", "EXAMDATE_bl": bl.isoformat(),
                   "Years_bl": round((exam - bl).days / 365.25, 4), "Month_bl": round((exam - bl).days / 30.44, 3),
                   "Month": m, "M": m,
                   **adnimerge_volumes(i * 100 + m, _atrophy(role, m, ADNI_CONVERSION.get(i)))}
            if i == 6 and m == 6:
                row["Hippocampus"] = ""
            scanned = not (role == "sMCI" and m == 48)
            if scanned:
                shift = 120 if (i == 2 and m == 0) else (i % 4)
                uid = _adni_scan(root, ptid, "MPRAGE", exam + timedelta(days=shift), image, seed=i * 100 + m,
                                 atrophy=_atrophy(role, m, ADNI_CONVERSION.get(i)))
                if i == 2 and m == 0:
                    row["IMAGEUID"] = uid
                if m == 0 and i == 7:
                    _adni_scan(root, ptid, "MPRAGE_Repeat", exam, image, seed=i * 100 + 1)
                if m == 0 and i == 8:
                    _adni_scan(root, ptid, "Localizer", exam, image, seed=i * 100 + 2)
                if m == 0 and i == 9:
                    _adni_scan(root, ptid, "Axial_T2_FLAIR", exam, image, seed=i * 100 + 3)
            rows.append(row)
            if i == 0 and m == 12:
                rows.append(dict(row))
        if i == 1:
            _adni_scan(root, ptid, "MPRAGE", bl + timedelta(days=36 * 30 + 420), image, seed=i * 100 + 99)
    _adni_scan(root, "099_S_9999", "MPRAGE", date(2011, 5, 5), image, seed=9999)
    pd.DataFrame(rows).to_csv(root / "ADNIMERGE.csv", index=False)
    return root


def adnimerge_volumes(seed: int, atrophy: float) -> dict[str, float]:
    """ADNIMERGE's volume columns (mm^3, as ADNI's FreeSurfer gives them) of one visit."""
    rng = np.random.default_rng(seed)
    icv = 1.5e6 * (1 + 0.08 * rng.standard_normal())
    scale = icv / 1.5e6 * (1 + 0.02 * rng.standard_normal(6))
    normal = np.array([7200.0, 30000.0, 1.05e6, 3800.0, 18000.0, 20000.0])   # Hippocampus ... MidTemp
    shrink = np.array([-3.0, 4.0, -1.0, -3.0, -1.5, -1.5]) * atrophy       # ventricles grow
    values = normal * scale * (1 + shrink)
    names = ("Hippocampus", "Ventricles", "WholeBrain", "Entorhinal", "Fusiform", "MidTemp")
    return {**{n: round(float(v), 1) for n, v in zip(names, values)}, "ICV": round(float(icv), 1)}


def _atrophy(role: str, month: int, conversion: int | None) -> float:
    """A little global darkening with disease, so a probe has something to find."""
    if role == "AD":
        return 0.15 + 0.002 * month
    if role == "pMCI":
        return 0.06 + 0.08 * min(1.0, month / conversion)
    return 0.05 if role in ("sMCI", "shortMCI") else 0.0


def _adni_scan(root: Path, ptid: str, desc: str, when: date, image: list[int], seed: int, atrophy: float = 0.0) -> str:
    image[0] += 1
    uid = image[0]
    stamp = when.strftime("%Y%m%d")
    folder = root / "ADNI" / ptid / desc / f"{when.isoformat()}_10_15_30.0" / f"I{uid}"
    name = f"ADNI_{ptid}_MR_{desc}_br_raw_{stamp}101530123_1_S{uid - 5000}_I{uid}.nii"
    write_nifti(folder / name, seed, gz=False, atrophy=atrophy)
    return str(uid)


# -- OASIS-3 ---------------------------------------------------------------------------------------
def build_oasis3(root: Path) -> Path:
    """OASIS-3: ``ROOT/sub-OAS3NNNN/ses-dNNNN/anat/*_T1w.nii.gz`` (+ JSON), with
    ``OASIS3_UDSb4_cdr.csv`` (OASISID, days_to_visit, age at visit, CDRTOT, dx1) and
    ``OASIS3_demographics.csv`` (OASISID, AgeatEntry, GENDER 1 = male / 2 = female).

    12 subjects, clinical visits on days 0, 365, 730, 1095; MR sessions on days 30, 400, 800
    (each within 70 days of a visit). CDR: 1-5 always 0 (CN), 6-8 0.5 (MCI), 9-10 0.5 then 1
    from day 730 (conversion at 730 / 30.4375 = 23.98 months), 11 CDR 1 with dx1 'Vascular Demt-
    primary' (diagnosis left empty), 12 CDR 1 'AD Dementia'.

    Messy: subject 1's day-365 visit is listed twice (1 clinical row dropped); subject 2 has no
    CDR at day 730 (the day-800 session's diagnosis is empty); subject 3 has an MR session at
    day 1600, 505 days from any visit (1 scan dropped); subject 4 has T1w run-01 and run-02 at
    day 30 (run-02 kept as a repeat); subject 5 has a resting-state BOLD run (1 scan dropped); subject 6
    has a T2w at day 30 (kept); OAS30099 has a session but no clinical row (1 scan dropped);
    subject 12 is missing from the demographics (sex empty, age from 'age at visit').
    Sessions kept: 12 x 3 = 36 T1w + 1 T2w. Subjects 1-6 have a JSON sidecar naming the scanner.
    """
    clinical, demo = [], []
    for s in range(1, 13):
        oid = f"OAS3{s:04d}"
        entry_age = 60.0 + 2.5 * s
        if s != 12:
            demo.append({"OASISID": oid, "AgeatEntry": entry_age, "GENDER": 1 if s % 2 else 2, "EDUC": 16,
                         "APOE": 33})
        for day in (0, 365, 730, 1095):
            if s <= 5:
                cdr, dx1 = 0.0, "Cognitively normal"
            elif s <= 8:
                cdr, dx1 = 0.5, "uncertain dementia"
            elif s <= 10:
                cdr, dx1 = (1.0, "AD Dementia") if day >= 730 else (0.5, "uncertain dementia")
            elif s == 11:
                cdr, dx1 = 1.0, "Vascular Demt- primary"
            else:
                cdr, dx1 = 1.0, "AD Dementia"
            row = {"OASISID": oid, "OASIS_session_label": f"{oid}_UDSb4_d{day:04d}", "days_to_visit": day,
                   "age at visit": round(entry_age + day / 365.25, 2), "CDRTOT": "" if (s == 2 and day == 730) else cdr,
                   "CDRSUM": cdr * 2, "dx1": dx1}
            clinical.append(row)
            if s == 1 and day == 365:
                clinical.append(dict(row))
        atrophy = {True: 0.0}.get(s <= 5, 0.05 if s <= 8 else 0.15)
        for day in (30, 400, 800):
            ses = root / f"sub-{oid}" / f"ses-d{day:04d}" / "anat"
            stem = f"sub-{oid}_ses-d{day:04d}"
            run = "_run-01" if s == 4 else ""
            f = write_nifti(ses / f"{stem}{run}_T1w.nii.gz", 5000 + s * 10 + day, atrophy=atrophy)
            if s <= 6:
                f.with_name(f.name.replace(".nii.gz", ".json")).write_text(
                    '{"Manufacturer": "Siemens", "ManufacturersModelName": "TrioTim", "MagneticFieldStrength": 3}')
            if s == 4 and day == 30:
                write_nifti(ses / f"{stem}_run-02_T1w.nii.gz", 7000 + s)
            if s == 5 and day == 30:
                write_nifti(root / f"sub-{oid}" / f"ses-d{day:04d}" / "func" / f"{stem}_task-rest_bold.nii.gz", 7100)
            if s == 6 and day == 30:
                write_nifti(ses / f"{stem}_T2w.nii.gz", 7200)
        if s == 3:
            write_nifti(root / f"sub-{oid}" / "ses-d1600" / "anat" / f"sub-{oid}_ses-d1600_T1w.nii.gz", 7300)
    write_nifti(root / "sub-OAS30099" / "ses-d0000" / "anat" / "sub-OAS30099_ses-d0000_T1w.nii.gz", 7400)
    pd.DataFrame(clinical).to_csv(root / "OASIS3_UDSb4_cdr.csv", index=False)
    pd.DataFrame(demo).to_csv(root / "OASIS3_demographics.csv", index=False)
    return root


# -- IXI -------------------------------------------------------------------------------------------
def build_ixi(root: Path) -> Path:
    """IXI: ``ROOT/IXI-T1/IXI002-Guys-0828-T1.nii.gz`` (and IXI-T2, IXI-PD, IXI-MRA) and the
    demographics sheet saved as ``IXI.csv`` (IXI_ID, SEX_ID (1=m, 2=f), HEIGHT, WEIGHT,
    ETHNIC_ID, MARITAL_ID, OCCUPATION_ID, QUALIFICATION_ID, DOB, DATE_AVAILABLE, STUDY_DATE, AGE).

    Subjects IXI010..IXI019 at Guys / HH / IOP (by id mod 3), each with T1, T2 and PD: 30 scans
    kept. Messy: IXI012 listed twice identically (1 sheet row dropped); IXI013 twice with ages
    40.1 and 45.3 (1 dropped, age left empty); IXI014 has no AGE but DOB 1960-03-01 and
    STUDY_DATE 2005-09-01 (age 45.50 computed); IXI015 has no AGE nor dates (age empty);
    IXI010 also has an MRA file (dropped); IXI099 has a T1 but no sheet row (dropped); IXI020 is
    in the sheet without any file.
    """
    sites = ("Guys", "HH", "IOP")
    sheet = []
    for n in list(range(10, 20)) + [20]:
        age = 20.0 + 4.5 * (n - 10)
        row = {"IXI_ID": n, "SEX_ID (1=m, 2=f)": 1 if n % 2 else 2, "HEIGHT": 170, "WEIGHT": 70, "ETHNIC_ID": 1,
               "MARITAL_ID": 1, "OCCUPATION_ID": 1, "QUALIFICATION_ID": 5, "DOB": "", "DATE_AVAILABLE": 1,
               "STUDY_DATE": "", "AGE": age}
        if n == 14:
            row.update(AGE="", DOB="1960-03-01", STUDY_DATE="2005-09-01")
        if n == 15:
            row.update(AGE="")
        sheet.append(row)
        if n in (12, 13):
            sheet.append(dict(row, AGE=45.3) if n == 13 else dict(row))
        if n == 13:
            sheet[-2]["AGE"] = 40.1
        if n == 20:
            continue
        for contrast in ("T1", "T2", "PD"):
            write_nifti(root / f"IXI-{contrast}" / f"IXI{n:03d}-{sites[n % 3]}-{800 + n:04d}-{contrast}.nii.gz",
                        9000 + n * 3 + len(contrast), atrophy=0.004 * (age - 20))
    write_nifti(root / "IXI-MRA" / "IXI010-HH-0810-MRA.nii.gz", 9900)
    write_nifti(root / "IXI-T1" / "IXI099-IOP-0899-T1.nii.gz", 9901)
    pd.DataFrame(sheet).to_csv(root / "IXI.csv", index=False)
    return root


# -- BraTS -----------------------------------------------------------------------------------------
def build_brats(root: Path) -> Path:
    """BraTS 2020: ``ROOT/MICCAI_BraTS2020_TrainingData/BraTS20_Training_NNN/..._{t1,t1ce,t2,flair,seg}
    .nii.gz`` with ``survival_info.csv`` (Brats20ID, Age, Survival_days, Extent_of_Resection) and
    ``name_mapping.csv`` (Grade, ..., BraTS_2020_subject_ID).

    Cases 001-006, 4 sequences each (24 scans). Survival: 001 age 60.5, 300 days (event);
    002 age 55.0 'ALIVE (361 days later)' (censored at 361 days); 003 age 70.0, no survival
    value; 005 age 45.0, 500 days; 004 and 006 not listed; 007 listed but no folder (1 clinical
    row dropped). 006 has no seg (label map empty); 005's seg holds a value 7 (label map dropped);
    001 has a stray ``_t1_copy`` file (1 scan dropped).
    """
    base = root / "MICCAI_BraTS2020_TrainingData"
    for n in range(1, 7):
        case = f"BraTS20_Training_{n:03d}"
        for k, seq in enumerate(("t1", "t1ce", "t2", "flair")):
            write_nifti(base / case / f"{case}_{seq}.nii.gz", 11000 + n * 10 + k)
        if n != 6:
            write_tumour_labels(base / case / f"{case}_seg.nii.gz", n, values=(1, 2, 7 if n == 5 else 4))
    write_nifti(base / "BraTS20_Training_001" / "BraTS20_Training_001_t1_copy.nii.gz", 11999)
    pd.DataFrame([
        {"Brats20ID": "BraTS20_Training_001", "Age": 60.5, "Survival_days": "300", "Extent_of_Resection": "GTR"},
        {"Brats20ID": "BraTS20_Training_002", "Age": 55.0, "Survival_days": "ALIVE (361 days later)",
         "Extent_of_Resection": "STR"},
        {"Brats20ID": "BraTS20_Training_003", "Age": 70.0, "Survival_days": "", "Extent_of_Resection": ""},
        {"Brats20ID": "BraTS20_Training_005", "Age": 45.0, "Survival_days": "500", "Extent_of_Resection": "GTR"},
        {"Brats20ID": "BraTS20_Training_007", "Age": 50.0, "Survival_days": "100", "Extent_of_Resection": "GTR"},
    ]).to_csv(base / "survival_info.csv", index=False)
    pd.DataFrame([{"Grade": "HGG" if n % 2 else "LGG", "BraTS_2017_subject_ID": "", "BraTS_2018_subject_ID": "",
                   "TCGA_TCIA_subject_ID": "", "BraTS_2019_subject_ID": "",
                   "BraTS_2020_subject_ID": f"BraTS20_Training_{n:03d}"} for n in range(1, 8)]
                 ).to_csv(base / "name_mapping.csv", index=False)
    return root


# -- UCSF-PDGM -------------------------------------------------------------------------------------
def build_ucsf_pdgm(root: Path) -> Path:
    """UCSF-PDGM: ``ROOT/UCSF-PDGM-v3/UCSF-PDGM-NNNN_nifti/UCSF-PDGM-NNNN_{T1,T1c,T2,FLAIR,
    tumor_segmentation,ADC}.nii.gz`` and ``UCSF-PDGM-metadata_v2.csv`` (ID with three digits, Sex,
    Age at MRI, WHO CNS Grade, Final pathologic diagnosis (WHO 2021), MGMT status, MGMT index,
    1p/19q, IDH, 1-dead 0-alive, OS, EOR, Biopsy prior to imaging, BraTS21 ID).

    Patients 004, 005, 007, 008, 010 imaged (4 sequences each: 20 scans). IDH: 004 wildtype (0),
    005 'mutated (NOS)' (1), 007 'IDH1 p.R132H' (1), 008 wildtype (0), 010 empty (marker empty).
    OS: 004 400 days dead, 005 1200 days alive, 007 empty, 008 250 dead, 010 900 alive.
    Messy: folder 0012 has no metadata row (4 scans dropped); metadata 011 has no folder;
    every folder also has an ADC map (not used).
    """
    rows = []
    spec = {4: ("wildtype", 400, 1, "M", 4), 5: ("mutated (NOS)", 1200, 0, "F", 2), 7: ("IDH1 p.R132H", "", "", "F", 3),
            8: ("wildtype", 250, 1, "M", 4), 10: ("", 900, 0, "M", 4), 11: ("wildtype", 300, 1, "F", 4)}
    for n, (idh, os_days, dead, sex, grade) in spec.items():
        rows.append({"ID": f"UCSF-PDGM-{n:03d}", "Sex": sex, "Age at MRI": 40 + n, "WHO CNS Grade": grade,
                     "Final pathologic diagnosis (WHO 2021)": "Glioblastoma, IDH-wildtype" if idh == "wildtype"
                     else "Astrocytoma, IDH-mutant", "MGMT status": "positive" if n % 2 else "negative",
                     "MGMT index": n, "1p/19q": "intact", "IDH": idh, "1-dead 0-alive": dead, "OS": os_days,
                     "EOR": "GTR", "Biopsy prior to imaging": "No", "BraTS21 ID": f"BraTS2021_{n:05d}"})
    for n in (4, 5, 7, 8, 10, 12):
        d = root / "UCSF-PDGM-v3" / f"UCSF-PDGM-{n:04d}_nifti"
        for k, seq in enumerate(("T1", "T1c", "T2", "FLAIR", "ADC")):
            write_nifti(d / f"UCSF-PDGM-{n:04d}_{seq}.nii.gz", 12000 + n * 10 + k)
        write_tumour_labels(d / f"UCSF-PDGM-{n:04d}_tumor_segmentation.nii.gz", 100 + n)
    pd.DataFrame(rows).to_csv(root / "UCSF-PDGM-metadata_v2.csv", index=False)
    return root


# -- FreeSurfer / FastSurfer output ----------------------------------------------------------------
#: aseg rows written per session: (SegId, StructName, mm^3 at no atrophy, change per unit atrophy)
ASEG_ROWS = ((4, "Left-Lateral-Ventricle", 11000.0, 4.0), (5, "Left-Inf-Lat-Vent", 400.0, 5.0),
             (17, "Left-Hippocampus", 3700.0, -3.0), (43, "Right-Lateral-Ventricle", 10500.0, 4.0),
             (44, "Right-Inf-Lat-Vent", 380.0, 5.0), (53, "Right-Hippocampus", 3800.0, -3.0),
             (14, "3rd-Ventricle", 1100.0, 3.0), (15, "4th-Ventricle", 1600.0, 1.0), (24, "CSF", 1000.0, 2.0))
#: aseg.stats '# Measure' lines: (name, short name, description, mm^3 at no atrophy, change per unit atrophy)
ASEG_MEASURES = (("BrainSeg", "BrainSegVol", "Brain Segmentation Volume", 1.16e6, -1.0),
                 ("BrainSegNotVent", "BrainSegVolNotVent", "Brain Segmentation Volume Without Ventricles",
                  1.13e6, -1.2),
                 ("CerebralWhiteMatter", "CerebralWhiteMatterVol", "Total cerebral white matter volume", 4.6e5, -0.8),
                 ("TotalGray", "TotalGrayVol", "Total gray matter volume", 6.3e5, -1.5),
                 ("EstimatedTotalIntraCranialVol", "eTIV", "Estimated Total Intracranial Volume", 1.52e6, 0.0))


def freesurfer_volumes(seed: int, atrophy: float) -> dict[str, float]:
    """One session's aseg volumes and measures (mm^3) by name: head size times structure change."""
    rng = np.random.default_rng(seed)
    head = 1 + 0.08 * rng.standard_normal()
    out = {name: round(v * head * (1 + k * atrophy + 0.02 * rng.standard_normal()), 4)
           for _, name, v, k in ASEG_ROWS}
    out.update({name: round(v * head * (1 + k * atrophy), 6) for name, _, _, v, k in ASEG_MEASURES})
    return out


def write_aseg_stats(path: Path, subject: str, volumes: dict[str, float], *, fastsurfer: bool = False) -> Path:
    """``stats/aseg.stats`` as mri_segstats writes it (FreeSurfer 7); ``fastsurfer`` puts the table's
    columns in another order, as a reader must find them from the ColHeaders line."""
    head = ["# Title Segmentation Statistics ", "# ", "# generating_program mri_segstats",
            "# cvs_version 7.4.1", "# anatomy_type volume", "# ", f"# subjectname {subject}"]
    head += [f"# Measure {n}, {short}, {desc}, {volumes[n]:.6f}, mm^3" for n, short, desc, _, _ in ASEG_MEASURES]
    head += ["# Measure BrainSegVol-to-eTIV, BrainSegVol-to-eTIV, Ratio of BrainSegVol to eTIV, "
             f"{volumes['BrainSeg'] / volumes['EstimatedTotalIntraCranialVol']:.6f}, unitless",
             "# SegVolFile mri/aseg.mgz ", f"# NRows {len(ASEG_ROWS)} ", "# NTableCols 10 "]
    cols = ["Index", "SegId", "NVoxels", "Volume_mm3", "StructName", "normMean", "normStdDev", "normMin",
            "normMax", "normRange"]
    if fastsurfer:
        cols = ["Index", "SegId", "StructName", "Volume_mm3", "NVoxels", "normMean", "normStdDev", "normMin",
                "normMax", "normRange"]
    head.append("# ColHeaders  " + " ".join(cols) + "  ")
    lines = []
    for k, (seg, name, _, _) in enumerate(ASEG_ROWS, start=1):
        cell = {"Index": k, "SegId": seg, "NVoxels": round(volumes[name]), "Volume_mm3": f"{volumes[name]:.1f}",
                "StructName": name, "normMean": 40.5, "normStdDev": 10.2, "normMin": 5.0, "normMax": 90.0,
                "normRange": 85.0}
        lines.append(" " + " ".join(f"{cell[c]:>6}" for c in cols) + " ")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(head + lines) + "\n")
    return path


def build_subjects_dir(subjects_dir: Path, sessions: list[tuple[str, str, float]]) -> Path:
    """A SUBJECTS_DIR for (participant_id, session_id, atrophy) sessions, in the naming rule of
    bench.data.freesurfer: ``<participant>_<session>``. Messy: the first subject's sessions are run
    longitudinally too (``.long.<participant>`` folders, a base template folder ``<participant>``, both
    kept beside the cross-sectional ones: the longitudinal values are 1 % larger and win); every
    third session is FastSurfer's column order; ``fsaverage`` has no stats."""
    first = sessions[0][0]
    for n, (sub, ses, atrophy) in enumerate(sessions):
        volumes = freesurfer_volumes(n, atrophy)
        write_aseg_stats(subjects_dir / f"{sub}_{ses}" / "stats" / "aseg.stats", f"{sub}_{ses}", volumes,
                         fastsurfer=n % 3 == 2)
        if sub == first:
            longitudinal = {k: v * 1.01 for k, v in volumes.items()}
            name = f"{sub}_{ses}.long.{sub}"
            write_aseg_stats(subjects_dir / name / "stats" / "aseg.stats", name, longitudinal)
    write_aseg_stats(subjects_dir / first / "stats" / "aseg.stats", first, freesurfer_volumes(999, 0.0))
    (subjects_dir / "fsaverage" / "surf").mkdir(parents=True, exist_ok=True)
    return subjects_dir


def write_asegstats_table(path: Path, sessions: list[tuple[str, str, float]]) -> Path:
    """``asegstats2table --meas volume --delimiter tab`` output for the same sessions (first column
    ``Measure:volume``, one column per structure, then the measures by their asegstats2table names)."""
    names = [name for _, name, _, _ in ASEG_ROWS] + [short for _, short, _, _, _ in ASEG_MEASURES[:-1]]
    header = ["Measure:volume", *names, "EstimatedTotalIntraCranialVol"]
    lines = ["\t".join(header)]
    for n, (sub, ses, atrophy) in enumerate(sessions):
        v = freesurfer_volumes(n, atrophy)
        long = {short: v[name] for name, short, _, _, _ in ASEG_MEASURES}
        cells = [v[name] for _, name, _, _ in ASEG_ROWS] + [long[s] for s in names[len(ASEG_ROWS):]]
        lines.append("\t".join([f"{sub}_{ses}", *(f"{x:.6f}" for x in cells),
                                f"{v['EstimatedTotalIntraCranialVol']:.6f}"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
