"""Looking inside models: gradient flow, attention maps, and worked examples of the cells."""
