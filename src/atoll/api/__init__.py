"""Kinds as data: resource types, schemas, validation, patching, printing, errors."""
