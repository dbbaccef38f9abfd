"""Load and benchmark harnesses (`make bench`); they measure, they are not tests."""
