-- PostgreSQL leaves room on its pages for in-place updates here; SQLite
-- has no fill factor. This keeps the two sets of migrations in step.
SELECT 1;
