"""Applications: workers that face client systems."""
