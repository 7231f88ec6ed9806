"""Plain types with no I/O: money, school records, validation, errors."""
