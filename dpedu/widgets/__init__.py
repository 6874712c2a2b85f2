"""Interactive widgets of the course notebooks (one module per widget, plumbing kept out of the decks)."""
