"""Distribution metrics against a human reference, with noise floors, and the HTML report."""
