"""portready test suite."""
