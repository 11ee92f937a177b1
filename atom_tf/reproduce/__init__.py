"""Reproduction: the suite of Table 1's runs (`suite`), the runner that trains and evaluates
each entry through the command lines (`suite_runner`), the paper's published numbers
(`published`) and the tables that put both side by side (`suite_report`)."""
