"""Super-resolution (DBPN) networks and inference."""
