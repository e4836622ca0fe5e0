"""The gRPC side: the ext_authz servicer, health, reflection, and the process lifecycle."""
