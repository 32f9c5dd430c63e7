"""Test doubles: stand-ins that are never reported as the real thing."""
