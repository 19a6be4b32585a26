"""The BTP driver: Algorithm 1 over the four services, data sets, run folders, reports, the `btp` CLI."""
