"""A toy target kind (tests/test_extensibility.py): age in whole decades, a regression of its own.
All a kind is: a ``TargetKind`` saying how labels are read and which head and loss it takes."""

import numpy as np

from bench.kinds import Regression


class AgeBand(Regression):
    name = "age_band"

    def labels(self, table) -> np.ndarray:
        return np.floor(table["y"].to_numpy(float) / 10.0)


AGE_BAND = AgeBand()
