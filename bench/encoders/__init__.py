"""The encoder API: what a submitter implements, and the registry that finds encoders by name."""

from bench.encoders.api import (Encoder, EncoderCard, get_encoder, list_encoders,
                                load_checkpoint_encoder, register_encoder)
from bench.encoders import features  # noqa: E402,F401  (registers `features`: precomputed per-scan features)

__all__ = ["Encoder", "EncoderCard", "get_encoder", "list_encoders", "load_checkpoint_encoder",
           "register_encoder"]
