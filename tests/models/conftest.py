"""The generator's fixtures (the real SmolLM2 folder, converted once) serve the model tests too."""

from tests.generator.conftest import persistent_cache, smol_dir, smol_tokenizer  # noqa: F401
