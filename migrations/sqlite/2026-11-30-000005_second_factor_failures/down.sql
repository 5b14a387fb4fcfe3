ALTER TABLE users DROP COLUMN failed_second_factors_since;
ALTER TABLE users DROP COLUMN failed_second_factors;
