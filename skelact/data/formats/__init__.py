"""How samples are stored: the annotation schema, the skeleton store and the pyskl pickle bridge."""
