"""Data set importers: HumanEval, MBPP, APPS, CodeContests (:mod:`.loaders`) and CodeIO (:mod:`.codeio`)."""
