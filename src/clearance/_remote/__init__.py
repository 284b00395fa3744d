"""Remote mode: policy synced from a Clearance server, records spooled locally and shipped."""
