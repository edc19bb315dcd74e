"""Framework glue, real servers and task-queue recipes."""
