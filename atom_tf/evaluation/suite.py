"""Entries of a reproduction suite (`bin/reproduce.py --suite=...`): each is a method, or an
ablation of one, as the command-line flags it adds to the suite's training and evaluation
flagfiles. Adding an entry is one `register_suite_entry` call."""

from __future__ import annotations

import dataclasses

from atom_tf.registry import Registry


@dataclasses.dataclass(frozen=True)
class SuiteEntry:
    name: str
    train_flags: tuple[str, ...]  # after the suite's training flagfile
    eval_flags: tuple[str, ...] = ()  # after the suite's evaluation flagfile


SUITE_ENTRIES: Registry[SuiteEntry] = Registry("suite entry")
get_suite_entry = SUITE_ENTRIES.get
suite_entry_names = SUITE_ENTRIES.names


def register_suite_entry(entry: SuiteEntry) -> SuiteEntry:
    return SUITE_ENTRIES.register(entry.name)(entry)


register_suite_entry(SuiteEntry("atom", ("--method=atom",)))
register_suite_entry(SuiteEntry("ntom", ("--method=ntom",)))
register_suite_entry(SuiteEntry("oe", ("--method=oe",)))
# The paper's "random sampling" ablation (Table 4): ATOM keeping n random candidates.
register_suite_entry(SuiteEntry("atom_random", ("--method=atom", "--mining=random")))
# The window-quantile sweep of PROTOCOL §3 / Appendix B.7: q over {0, 0.125, 0.25, 0.5, 0.75}.
for _q in ("0", "0.125", "0.25", "0.5", "0.75"):
    register_suite_entry(SuiteEntry(f"atom_q{_q}", ("--method=atom", f"--quantile={_q}")))
