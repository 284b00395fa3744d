"""HTTP routes: thin, validating input and calling the store."""
