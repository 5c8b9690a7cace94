"""edgepack conversion targets, one module each, found through the registry in base."""
