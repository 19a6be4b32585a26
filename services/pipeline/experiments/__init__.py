"""`btp experiment`: the paper's experiments at small scale (recipes, the experiment, statistics, command)."""
