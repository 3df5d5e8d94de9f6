//! Outages: Redis restarted, the object store down.
