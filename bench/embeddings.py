"""Frozen-encoder embeddings, computed once per scan and cached on disk.

The cache key is (encoder checkpoint hash, scan content hash, input space, perturbation), so a
linear-probe grid of fractions x seeds x few-shot draws embeds every scan exactly once, a
re-run embeds nothing, and a changed scan file or a new checkpoint is embedded afresh.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.atomic import atomic_write
from bench.data.cohort import Cohort
from bench.data.store import VolumeStore, content_sha256
from bench.progress import progress_bar


class EmbeddingCache:
    """One small .npy per (encoder, space, perturbation, scan) under ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.computed = 0  # scans passed through the encoder by this object (for tests / perf)

    def _path(self, encoder_hash: str, space: str, perturbation: str, scan_hash: str) -> Path:
        return self.root / encoder_hash[:20] / space / perturbation / scan_hash[:2] / f"{scan_hash}.npy"

    def _keep(self, todo: list[tuple[int, Path]], vectors, out: dict[int, np.ndarray]) -> None:
        """Write freshly computed embeddings to the cache (atomically) and into ``out``."""
        for (r, path), v in zip(todo, vectors):
            atomic_write(path, lambda f, v=v: np.save(f, np.asarray(v, dtype=np.float32)))
            out[r] = v
        self.computed += len(todo)

    def embed(self, encoder, cohort: Cohort, rows: np.ndarray, store: VolumeStore, *,
              perturbation: str = "clean", transform=None, batch_size: int = 8,
              progress: bool = True) -> dict[int, np.ndarray]:
        """Embeddings of cohort rows ``rows`` (cached ones are read, the rest computed in batches).

        ``transform(volume, row) -> volume`` applies a perturbation before the encoder; its name
        must be in ``perturbation`` so perturbed and clean embeddings never share a key.
        """
        enc_hash = encoder.checkpoint_hash()
        space = encoder.card.input_space
        table = cohort.table
        out: dict[int, np.ndarray] = {}
        todo: list[tuple[int, Path]] = []
        for r in map(int, rows):
            path = self._path(enc_hash, space, perturbation, content_sha256(table.at[r, "path"]))
            if path.is_file():
                out[r] = np.load(path)
            else:
                todo.append((r, path))
        if not todo:
            return out
        with progress_bar(progress) as bar:
            task = bar.add_task(f"embedding with {encoder.card.name} ({perturbation})", total=len(todo))
            if hasattr(encoder, "embed_rows"):  # reads latents, not voxels (the oracle)
                self._keep(todo, encoder.embed_rows(table.loc[[r for r, _ in todo]], cohort), out)
                bar.advance(task, len(todo))
                return out
            store.prefetch([table.at[r, "path"] for r, _ in todo], space, progress=False)
            for start in range(0, len(todo), batch_size):
                chunk = todo[start:start + batch_size]
                vols = []
                for r, _ in chunk:
                    v = np.asarray(store.get(table.at[r, "path"], space), dtype=np.float32)
                    vols.append(transform(v, table.loc[r]) if transform is not None else v)
                batch = torch.from_numpy(np.stack(vols)).unsqueeze(1)
                with torch.inference_mode():
                    emb = encoder.embed(batch).float().cpu().numpy()
                if emb.shape[0] != len(chunk) or not np.isfinite(emb).all():
                    raise RuntimeError(f"encoder {encoder.card.name} returned shape {emb.shape} or "
                                       f"non-finite values for scans {[table.at[r, 'path'] for r, _ in chunk]}")
                self._keep(chunk, emb, out)
                bar.advance(task, len(chunk))
        return out
