"""Reference encoders and SSL pretraining recipes, declared through the same public API a
submitter uses: each encoder is an entry of the ``mribench.encoders`` entry-point group in
``pyproject.toml`` (imported on first use); an SSL encoder names its recipe (``recipe = ...``).
The harness (``bench/``) never imports this package.
"""
