"""Reporting: tables and plots from check results. No computation happens here."""
