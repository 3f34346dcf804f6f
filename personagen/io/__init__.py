"""Readers and writers: histories inputs, the persona bank, human reference data."""
