"""Attacks: the objectives an attacker raises (per-sample losses on a network's outputs) and
the one L∞ PGD engine that training (ATOM's attacked outliers, ACET, ROWL) and evaluation
(the L∞ threat model) both run, parameterised by those objectives (docs/protocol.md §2, §5)."""
