"""Datasets in their own formats (NTU, N-UCLA, UTD-MHAD, SBU, KARD, MSR) read into stores."""
