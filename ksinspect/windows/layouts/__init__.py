"""Windows structure layouts shipped as data (one JSON file per build; see README.md)."""
