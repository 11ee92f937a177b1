"""The paper's Gaussian model (Section 3, Appendix A.2): closed forms and detectors
(`gaussian`), the three experiments of `bin/theory.py` (`experiments`) and their report."""
