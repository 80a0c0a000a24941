"""An example application with its own taskgate tasks (see README, "Your own tasks")."""
