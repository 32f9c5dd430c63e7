"""Locust load runs over every stack and protocol, and the comparison report."""
