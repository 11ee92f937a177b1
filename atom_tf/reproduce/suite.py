"""Entries of a reproduction suite (`bin/reproduce.py --suite=...`): each is a method, or an
ablation of one, as the command-line flags it adds to the suite's training and evaluation
flagfiles (and a suite's `<entry_flags_dir>/<run>.flags`, where it has one, after those).
Adding an entry is one `register_suite_entry` call."""

from __future__ import annotations

import dataclasses

from atom_tf.registry import Registry


@dataclasses.dataclass(frozen=True)
class SuiteEntry:
    """`{runs_dir}` in a flag stands for the suite's runs folder (fine-tuning from another
    entry's run). Entries with the same `run` share one training (scorers of one network)."""

    name: str
    train_flags: tuple[str, ...]  # after the suite's training flagfile
    eval_flags: tuple[str, ...] = ()  # after the suite's evaluation flagfile
    run: str = ""  # the run folder under the suite's runs folder ('' = the entry's name)

    @property
    def run_name(self) -> str:
        return self.run or self.name


SUITE_ENTRIES: Registry[SuiteEntry] = Registry("suite entry")
get_suite_entry = SUITE_ENTRIES.get
suite_entry_names = SUITE_ENTRIES.names


def register_suite_entry(entry: SuiteEntry) -> SuiteEntry:
    return SUITE_ENTRIES.register(entry.name)(entry)


# Table 1's baselines (paper Appendix B.3). MSP, ODIN and Mahalanobis score one standard run;
# SOFL's second phase and the energy regulariser fine-tune it. Their batch sizes, schedules and
# pool samples differ per dataset: a suite's entry flag files give them (`--entry_flags_dir`).
register_suite_entry(SuiteEntry("msp", ("--method=standard",), run="standard"))
register_suite_entry(SuiteEntry("odin", ("--method=standard",), ("--scorer=odin",), "standard"))
register_suite_entry(
    SuiteEntry("mahalanobis", ("--method=standard",), ("--scorer=mahalanobis",), "standard")
)
register_suite_entry(SuiteEntry("acet", ("--method=acet",)))
register_suite_entry(SuiteEntry("ccu", ("--method=ccu",)))
register_suite_entry(SuiteEntry("sofl", ("--method=sofl", "--init_from={runs_dir}/standard")))
register_suite_entry(SuiteEntry("rowl", ("--method=rowl",)))
register_suite_entry(SuiteEntry("energy", ("--method=energy", "--init_from={runs_dir}/standard")))
register_suite_entry(SuiteEntry("atom_energy", ("--method=atom_energy",)))
register_suite_entry(SuiteEntry("atom", ("--method=atom",)))
register_suite_entry(SuiteEntry("ntom", ("--method=ntom",)))
register_suite_entry(SuiteEntry("oe", ("--method=oe",)))
# The paper's "random sampling" ablation (Table 4): ATOM keeping n random candidates.
register_suite_entry(SuiteEntry("atom_random", ("--method=atom", "--mining=random")))
# The window-quantile sweep of docs/protocol.md §3 / Appendix B.7: q over {0, 0.125, 0.25, 0.5, 0.75}.
for _q in ("0", "0.125", "0.25", "0.5", "0.75"):
    register_suite_entry(SuiteEntry(f"atom_q{_q}", ("--method=atom", f"--quantile={_q}")))
