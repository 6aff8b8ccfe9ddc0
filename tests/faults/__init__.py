"""Fault injection, one module per theme: every fault ends in a precise message or an exact recovery."""
