"""Images and videos: reading, writing, and whole photos and videos anonymized or restored."""
