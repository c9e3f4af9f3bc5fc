"""chatledger's benchmarks: scripts run by hand (`make bench`), never in CI. Each prints
its figures beside a baseline measured in the same run, with the ratio and the target."""
