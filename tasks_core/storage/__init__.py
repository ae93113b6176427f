"""Storage: the tables, connections, and the SQL that reads tasks and writes everything else."""
