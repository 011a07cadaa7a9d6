"""Built-in examples that need nothing but the install (used by ``modelfusion demo``)."""
