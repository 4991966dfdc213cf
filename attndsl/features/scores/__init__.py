"""Score modifiers, one module each."""
