"""Faces in photos: detection, landmarks, alignment, masks and paste-back."""
