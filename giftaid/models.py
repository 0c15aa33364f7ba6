"""Gift Aid claims: tables are added by the Gift Aid issue."""
