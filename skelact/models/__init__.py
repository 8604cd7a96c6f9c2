"""Per-frame encoders, the recurrent core with temporal attention, and the recognizer."""
