"""Personality inventories: item banks, keys, scoring, reliability."""
