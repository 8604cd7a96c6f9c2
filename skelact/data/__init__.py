"""Everything that turns files into samples."""
