"""Sample ADE config package (contact fields)."""
