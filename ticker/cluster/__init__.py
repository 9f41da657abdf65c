"""Scale-out: the broker between a node's bus and other nodes (in-process only, or Redis)."""
