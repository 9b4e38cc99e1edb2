"""Data curation tools: shared image I/O, splitting, de-duplication, statistics, sample data."""
