"""Local development host: what AOS needs to run on one machine without Azure."""
