"""Folders of photos: output planning, the jobs, and their local and Ray engines."""
