"""The key and what it protects: keys, key transforms, the sealed geometry, the metadata."""
