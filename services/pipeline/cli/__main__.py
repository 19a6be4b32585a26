"""``python -m services.pipeline.cli ...`` is ``btp ...``."""

from .main import main

main()
