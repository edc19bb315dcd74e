"""End to end over real TCP and processes; the README, the docs, benchmarks and reports."""
