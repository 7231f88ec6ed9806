"""`switchboard bench NAME`: end-to-end measurements on this computer, each against a reference a
user would otherwise have, in the same run (DESIGN.md, "Benchmarks")."""
