"""Equal-compute studies: the plan (`study`), parallel jobs (`jobs`), and their reports (`report`, `plots`)."""
